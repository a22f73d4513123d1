"""The two stages and LoRA as the paper runs them, on a tiny model; and a real learning test."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from llava15.config import load_recipe
from llava15.model.load import load_bundle
from llava15.train.run import train
from llava15.train.setup import load_base
from tests.train.conftest import TINY_RECIPE, read_losses, read_weights, tiny_overrides, write_dataset

SHORT = {"train.max_steps": 3, "train.global_batch_size": 4, "train.micro_batch_size": 4, "train.resume": "none",
         "train.warmup_ratio": 0.0}
STAGE1 = {"train.stage": "projector", "data.template": "plain", "data.image_aspect_ratio": "square"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return write_dataset(tmp_path_factory.mktemp("data"), n=4, text_only=1)


@pytest.fixture(scope="module")
def stage1(tiny_sources, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1")
    cfg = load_recipe(TINY_RECIPE, tiny_overrides(tiny_sources, data, out, **SHORT, **STAGE1))
    train(cfg)
    return out, cfg


def test_stage1_trains_only_the_projector(stage1) -> None:
    out, cfg = stage1
    before, _, _ = load_base(cfg)
    after = load_bundle(out / "final").model
    changed = []
    for (name, a), b in zip(before.named_parameters(), after.parameters()):
        if "multi_modal_projector" in name:
            changed.append(not torch.equal(a, b))
        else:
            assert torch.equal(a, b), f"{name} changed in stage 1"
    assert all(changed), "every projector tensor must have been updated"
    projector = load_file(out / "mm_projector.safetensors")
    assert sorted(projector) == ["model.mm_projector.0.bias", "model.mm_projector.0.weight",
                                 "model.mm_projector.2.bias", "model.mm_projector.2.weight"]
    torch.testing.assert_close(projector["model.mm_projector.2.weight"],
                               after.model.multi_modal_projector.linear_2.weight, rtol=0, atol=0)


def test_stage2_starts_from_stage1_projector(stage1, tiny_sources, data, tmp_path) -> None:
    out1, _ = stage1
    cfg = load_recipe(TINY_RECIPE, tiny_overrides(tiny_sources, data, tmp_path, **SHORT, **{
        "model.init_projector": str(out1 / "mm_projector.safetensors")}))
    model, _, _ = load_base(cfg)
    trained = load_file(out1 / "mm_projector.safetensors")
    torch.testing.assert_close(model.model.multi_modal_projector.linear_1.weight,
                               trained["model.mm_projector.0.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.model.multi_modal_projector.linear_2.bias,
                               trained["model.mm_projector.2.bias"], rtol=0, atol=0)


def test_lora_run_saves_adapter_and_projector_and_merges(stage1, tiny_sources, data, tmp_path) -> None:
    out1, _ = stage1
    cfg = load_recipe(TINY_RECIPE, tiny_overrides(tiny_sources, data, tmp_path, **SHORT, **{
        "train.stage": "projector+lora", "lora.enabled": True, "lora.r": 4, "lora.alpha": 8,
        "train.lr": 1e-2, "train.projector_lr": 1e-3,
        "model.init_projector": str(out1 / "mm_projector.safetensors")}))
    train(cfg)
    adapter = tmp_path / "adapter"
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    extra = load_file(adapter / "non_lora_trainables.safetensors")
    assert sorted(extra) == [f"model.multi_modal_projector.linear_{i}.{p}" for i in (1, 2) for p in ("bias", "weight")]
    merged = load_bundle(tmp_path / "final").model
    torch.testing.assert_close(merged.model.multi_modal_projector.linear_1.weight,
                               extra["model.multi_modal_projector.linear_1.weight"], rtol=0, atol=0)
    base, _, _ = load_base(cfg)
    q = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(dict(merged.named_parameters())[q], dict(base.named_parameters())[q]), \
        "the merged LLM must carry the adapters' update"
    v = "model.vision_tower.encoder.layers.0.mlp.fc1.weight"
    base_v = dict(base.named_parameters())
    merged_v = dict(merged.named_parameters())
    if v in base_v and v in merged_v:
        assert torch.equal(base_v[v], merged_v[v])


def test_tiny_recipe_memorises_a_small_dataset(tiny_sources, tmp_path) -> None:
    data = write_dataset(tmp_path / "data", n=4, text_only=1)
    cfg = load_recipe(TINY_RECIPE, tiny_overrides(tiny_sources, data, tmp_path / "out", **{
        "train.max_steps": 200, "train.global_batch_size": 5, "train.micro_batch_size": 5, "train.lr": 2e-3,
        "train.resume": "none"}))
    train(cfg)
    losses = read_losses(tmp_path / "out")
    first, last = losses[0], sum(losses[-5:]) / 5
    assert first > 5.0 and last < 0.4, f"loss went from {first:.3f} to {last:.3f}: the model did not memorise"
    assert read_weights(tmp_path / "out" / "final")


def test_original_modality_grouped_batching_runs(tiny_sources, data, tmp_path) -> None:
    cfg = load_recipe(TINY_RECIPE, tiny_overrides(tiny_sources, data, tmp_path, **{
        **SHORT, "train.max_steps": 2, "train.micro_batch_size": 2, "data.batching": "modality_grouped"}))
    train(cfg)
    losses = read_losses(tmp_path)
    assert len(losses) == 2 and all(loss > 0 for loss in losses)


def test_bf16_on_cpu_trains_the_stage_in_mixed_precision(stage1, tiny_sources, data, tmp_path, capsys) -> None:
    """`train.precision=bf16` on one CPU (fast where the CPU has AMX / avx512_bf16): the frozen LLM and
    tower are stored in bf16, the projector trains in fp32 under bf16 autocast; the losses follow the
    fp32 run's and the final checkpoint loads."""
    out1, cfg1 = stage1
    cfg = load_recipe(TINY_RECIPE, tiny_overrides(tiny_sources, data, tmp_path, **SHORT, **STAGE1,
                                                  **{"train.precision": "bf16"}))
    train(cfg)
    assert "precision: bf16 autocast" in capsys.readouterr().out
    torch.testing.assert_close(read_losses(tmp_path), read_losses(out1), rtol=2e-2, atol=0)
    after = load_bundle(tmp_path / "final", dtype=torch.float32).model
    before, _, _ = load_base(cfg1)
    fp32_run = load_bundle(out1 / "final").model
    for (name, a), b, c in zip(before.named_parameters(), after.parameters(), fp32_run.parameters()):
        if "multi_modal_projector" in name:
            step_bf16, step_fp32 = (b - a).flatten(), (c - a).flatten()
            assert torch.cosine_similarity(step_bf16, step_fp32, dim=0) > 0.95, f"{name}: not the fp32 run's update"
        else:
            assert torch.equal(b, a.to(torch.bfloat16).float()), f"{name}: not the bf16 copy of the frozen weight"
