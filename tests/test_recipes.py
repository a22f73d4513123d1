"""Every recipe in recipes/ loads, and the paper's recipes hold the paper's values (Table 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llava15.config import RECIPES_DIR, load_recipe

RECIPES = RECIPES_DIR


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_loads(path: Path) -> None:
    cfg = load_recipe(path)
    assert cfg.train.global_batch_size % cfg.train.micro_batch_size == 0


def test_paper_values() -> None:
    s1 = load_recipe(RECIPES / "stage1_pretrain.yaml")
    s2 = load_recipe(RECIPES / "stage2_finetune.yaml")
    lora = load_recipe(RECIPES / "stage2_lora.yaml")
    for cfg in (s1, s2, lora):
        t = cfg.train
        assert (t.lr_scheduler, t.warmup_ratio, t.weight_decay, t.epochs) == ("cosine", 0.03, 0.0, 1.0)
        assert (t.adam_beta1, t.adam_beta2, t.adam_eps, t.max_grad_norm) == (0.9, 0.999, 1e-8, 0.0)
        assert t.activation_checkpointing == "auto" and t.precision == "auto" and cfg.data.model_max_length == 2048
        assert cfg.model.vision_feature_layer == -2 and cfg.model.projector == "mlp2x_gelu"
    assert (s1.train.global_batch_size, s1.train.lr, s1.train.stage) == (256, 1e-3, "projector")
    assert (s1.data.template, s1.data.image_aspect_ratio) == ("plain", "square")
    assert (s2.train.global_batch_size, s2.train.lr, s2.train.stage) == (128, 2e-5, "projector+llm")
    assert (s2.data.template, s2.data.image_aspect_ratio) == ("vicuna_v1", "pad")
    assert s2.model.init_projector == f"{s1.train.output_dir}/mm_projector.safetensors"
    assert (lora.train.lr, lora.train.projector_lr, lora.train.stage) == (2e-4, 2e-5, "projector+lora")
    assert (lora.lora.enabled, lora.lora.r, lora.lora.alpha, lora.lora.dropout) == (True, 128, 256, 0.05)


def test_qlora_recipe_is_the_lora_recipe_on_an_nf4_base() -> None:
    qlora = load_recipe(RECIPES / "stage2_qlora.yaml")
    lora = load_recipe(RECIPES / "stage2_lora.yaml")
    assert qlora.model.quantize == "nf4" and lora.model.quantize == "none"
    assert (qlora.train.lr, qlora.train.projector_lr, qlora.train.stage) == (2e-4, 2e-5, "projector+lora")
    assert (qlora.lora.enabled, qlora.lora.r, qlora.lora.alpha, qlora.lora.dropout) == (True, 128, 256, 0.05)
    assert qlora.train.checkpoint_every(on_gpu=True) == 1 and qlora.train.global_batch_size == 128
    assert qlora.train.micro_batch_size <= 4  # what fits 24 GB (tests/train/test_memory.py)


def test_overrides_reach_the_named_keys() -> None:
    cfg = load_recipe(RECIPES / "tiny_cpu.yaml", ["train.max_steps=3", "train.lr=2e-5", "data.path=x.json",
                                                  "train.resume=none", "model.init_projector=p.safetensors"])
    assert (cfg.train.max_steps, cfg.train.lr, cfg.data.path) == (3, 2e-5, "x.json")
    assert (cfg.train.resume, cfg.model.init_projector) == ("none", "p.safetensors")
