"""The memory projection (`llava15 train RECIPE --dry-run`): the real 7B/13B shapes, QLoRA fitting one
24 GB GPU, FSDP sharding, and the NF4 bytes of the formula against what bitsandbytes stores."""

from __future__ import annotations

import pytest
import torch

from llava15.config import load_recipe
from llava15.train.memory import GIB, NF4_BITS, memory_report, project

GPU_24GB = 24e9  # a "24 GB" card (RTX 3090/4090, A10G, L4) holds 24e9 bytes; less than that is usable


@pytest.mark.parametrize("micro", [1, 2, 3, 4])
def test_7b_qlora_stage2_fits_24gb_with_checkpointing(micro: int) -> None:
    batch = [f"train.micro_batch_size={micro}", f"train.global_batch_size={32 * micro}"]
    cfg = load_recipe("stage2_qlora", batch)
    assert cfg.train.checkpoint_every(on_gpu=True) == 1 and cfg.model.quantize == "nf4"
    p = project(cfg, world_size=1)
    print(f"7B QLoRA stage 2, micro-batch {micro} x {cfg.data.model_max_length} tokens: "
          f"{p.gpu_total / GIB:.2f} GiB projected")
    assert 3 * GIB < p.gpu_total < GPU_24GB
    lora = project(load_recipe("stage2_lora", batch), world_size=1, checkpointing=True)  # the same activations
    # NF4 frees 16 - 4.127 bits of each of the 6.48e9 LLM linear weights
    assert lora.gpu_total - p.gpu_total == pytest.approx(6.476e9 * (16 - NF4_BITS) / 8, rel=0.01)


def test_report_prints_each_term_with_its_formula() -> None:
    text = memory_report(load_recipe("stage2_qlora"), 1)
    print(text)
    for part in ("frozen LLM linears (nf4)", f"x {NF4_BITS:.3f}/8 B", "trained weights + grads + AdamW",
                 "activations (checkpointed)", "total", "host memory per node", "assumed 1 GB/s", "final/"):
        assert part in text


def test_full_finetune_shards_over_fsdp_ranks() -> None:
    cfg = load_recipe("stage2_finetune")
    one, eight = project(cfg, world_size=1), project(cfg, world_size=8)
    assert one.gpu_total > 80 * GIB, "7B full fine-tuning does not fit one 80 GB GPU (perf_anchors §2.5)"
    assert eight.gpu["weights (sharded)"] == pytest.approx(eight.total_params * 4 / 8)
    assert eight.gpu_total < 80 * GIB
    thirteen = project(load_recipe("stage2_finetune", ["model.llm=lmsys/vicuna-13b-v1.5"]), world_size=8)
    assert 12.9e9 < thirteen.total_params < 13.6e9


def test_local_folders_give_their_own_shapes(tmp_path) -> None:
    from llava15.testing import make_tiny_clip, make_tiny_llama

    cfg = load_recipe("tiny_cpu", [f"model.llm={make_tiny_llama(tmp_path / 'llama')}",
                                   f"model.vision_tower={make_tiny_clip(tmp_path / 'clip')}"])
    assert project(cfg).total_params < 1e6
    unknown = load_recipe("tiny_cpu", ["model.llm=someone/unknown-model"])
    assert "not available" in memory_report(unknown, 1)


def test_nf4_bits_of_the_formula_are_what_bitsandbytes_stores() -> None:
    pytest.importorskip("bitsandbytes")
    from llava15.model.quantize import _bnb_layer, module_bytes

    layer = torch.nn.Linear(1024, 1024, bias=False)
    q = _bnb_layer(layer, "nf4", torch.device("cpu"), torch.float32)
    tables = (16 + 256) * 4  # the NF4 code and the scales' 8-bit code: per layer, not per weight
    assert module_bytes(q) - tables == pytest.approx(1024 * 1024 * NF4_BITS / 8, rel=0.001)


def test_lora_auto_checkpointing_is_projected_as_the_trainer_runs_it() -> None:
    """`activation_checkpointing: auto` is every second layer for LoRA on a GPU (`TrainConfig.checkpoint_every`):
    the projection holds those activations, between checkpointing every layer and none."""
    cfg = load_recipe("stage2_lora")
    assert cfg.train.checkpoint_every(on_gpu=True) == 2 and cfg.train.checkpoint_every(on_gpu=False) == 0
    every2, full, none = project(cfg), project(cfg, checkpointing=True), project(cfg, checkpointing=False)
    assert "activations (every 2 layers checkpointed)" in every2.gpu
    assert full.gpu_total < every2.gpu_total < none.gpu_total
    assert "every 2 layers" in memory_report(cfg, 1)
