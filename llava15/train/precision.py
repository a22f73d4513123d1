"""Where the model's weights live and in which precision they compute (`train.precision`).

`place_model(model, cfg, dist) -> (autocast_dtype | None, description)`:
- one process: the model moves to its device; with bf16 the frozen weights are stored in bf16 (half
  their memory and no cast per step) and bf16 is the step's autocast dtype, trained weights and the
  optimizer state staying fp32;
- several processes: frozen weights are stored in bf16 on GPU with bf16, the model is sharded with FSDP2
  as the stage asks (`train.distributed.shard_model`: bf16 parameters, fp32 gradient reduction on GPU),
  and, when only rank 0 read the weights (the other ranks built the model on the meta device), rank 0
  sends every rank its shards and the buffers.
`train.precision: auto` is bf16 on GPU and fp32 on CPU; CPUs with AMX gain from bf16 too.
"""

from __future__ import annotations

import torch
import torch.distributed as tdist

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


def _is_meta(model: torch.nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def place_model(model: torch.nn.Module, cfg: RecipeConfig, dist: DistInfo) -> tuple[torch.dtype | None, str]:
    """Move, shard and set the precision of `model` (module docstring); returns (autocast dtype, what)."""
    bf16 = wants_bf16(cfg, dist)
    if not dist.distributed:
        model.to(dist.device)
        if bf16:
            return bf16_on_one_device(model), ("bf16 autocast; frozen weights stored in bf16, trained weights "
                                               "and optimizer in fp32")
        return None, "fp32"
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    fsdp_bf16 = bf16 and dist.device.type == "cuda"
    if fsdp_bf16:  # every rank alike (meta tensors too), before rank 0 takes the copy it sends
        for p in model.parameters():
            if not p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
    meta = _is_meta(model)
    full = None if meta else dict(model.state_dict())  # rank 0's weights, sent to every rank after sharding
    if not meta:
        model.to(dist.device)
    how = shard_model(model, bf16=fsdp_bf16, device=dist.device, stage=cfg.train.stage, mesh_shape=cfg.train.mesh)
    if meta:
        model.to_empty(device=dist.device)
    set_model_state_dict(model, full or {}, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    for _, buf in sorted(model.named_buffers(), key=lambda kv: kv[0]):  # e.g. rotary inv_freq (not in state dicts)
        tdist.broadcast(buf, src=0)
    precision = "bf16 compute, fp32 gradient reduction (FSDP2 mixed precision)" if fsdp_bf16 else \
        "fp32 (FSDP2 mixed precision is used on GPU only)" if bf16 else "fp32"
    return None, f"{precision}; {how}; weights read by rank 0 and sent to every rank"
