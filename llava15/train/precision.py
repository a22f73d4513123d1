"""Where the model's weights live and in which precision they compute (`train.precision`).

`place_model(model, cfg, dist) -> (autocast_dtype | None, description)` moves the model to this rank's
device and then, with several ranks, shards it with FSDP2 (bf16 parameters, fp32 gradient reduction on
GPU through FSDP's mixed-precision policy), or, on one device with bf16, stores the frozen weights in
bf16 (half their memory and no cast per step) and returns bf16 as the step's autocast dtype, trained
weights and optimizer state staying fp32. `train.precision: auto` is bf16 on GPU and fp32 on CPU; CPUs
with AMX gain from bf16 too (`benchmarks/train_throughput.py --precision bf16`).
"""

from __future__ import annotations

import torch

from llava15.config import RecipeConfig
from llava15.train.distributed import DistInfo, shard_model


def wants_bf16(cfg: RecipeConfig, dist: DistInfo) -> bool:
    precision = cfg.train.precision
    return precision == "bf16" or (precision == "auto" and dist.device.type == "cuda")


def bf16_on_one_device(model: torch.nn.Module) -> torch.dtype:
    """bf16 mixed precision without FSDP: frozen weights stored in bf16, trained ones kept fp32 for the
    optimizer; returns the autocast dtype for the step."""
    for p in model.parameters():
        if not p.requires_grad and p.is_floating_point():  # quantized weights (model.quantize) stay as they are
            p.data = p.data.to(torch.bfloat16)
    return torch.bfloat16


def place_model(model: torch.nn.Module, cfg: RecipeConfig, dist: DistInfo) -> tuple[torch.dtype | None, str]:
    """Move, shard and set the precision of `model` (module docstring); returns (autocast dtype, what)."""
    bf16 = wants_bf16(cfg, dist)
    model.to(dist.device)
    if dist.distributed:
        fsdp_bf16 = bf16 and dist.device.type == "cuda"
        shard_model(model, bf16=fsdp_bf16, device=dist.device)
        if fsdp_bf16:
            return None, "bf16 compute, fp32 gradient reduction (FSDP2 mixed precision)"
        return None, "fp32 (FSDP2 mixed precision is used on GPU only)" if bf16 else "fp32"
    if bf16:
        return bf16_on_one_device(model), ("bf16 autocast; frozen weights stored in bf16, trained weights and "
                                           "optimizer in fp32")
    return None, "fp32"
