"""Process-group setup, FSDP2 sharding and rank-0 helpers.

Launch with `torchrun --nproc_per_node N -m llava15.cli train ...` (or plain `python` for one
process). Backend: nccl on GPU, gloo on CPU. With more than one process the model is sharded with
PyTorch FSDP2 (`fully_shard`) over a device mesh: 1-D (every rank holds a shard), or `train.mesh:
[replicate, shard]` for HSDP (shard within a node, replicate across nodes, so parameter all-gathers
never cross nodes). What is sharded depends on what trains (`shard_model`):
- stage 1 (`projector`): only the projector is managed by FSDP; the frozen LLM and vision tower are
  left out (`ignored_params`) and stay whole on every rank, so they are never gathered;
- LoRA: one unit per transformer block, kept gathered from forward to backward
  (`reshard_after_forward=False`): the frozen base is gathered once per micro-batch, not twice;
- full fine-tuning: one unit per block (resharded after forward, but the last) plus the root.
On GPU with bf16 the parameters are gathered in bf16 and gradients reduced in fp32. With one process
nothing is wrapped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_kind: str = "auto") -> DistInfo:
    """Join the torchrun process group when launched by torchrun; pick this rank's device
    (`train.device`: `auto`, `cpu` or `cuda`)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda, but torch sees no CUDA device (a CPU build of torch, or "
                           "CUDA_VISIBLE_DEVICES hides them); use train.device=cpu or auto")
    if device_kind != "cpu" and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} CUDA device(s) visible on this "
                f"node; start at most that many processes per node (torchrun --nproc_per_node), or set "
                f"train.device=cpu to run the ranks on CPU (gloo)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    return DistInfo(rank, world_size, local_rank, device)


def cleanup() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(value: float | int, device: torch.device) -> float:
    """Sum a Python number over ranks (identity with one process)."""
    if not dist.is_initialized():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def all_reduce_max(value: float, device: torch.device) -> float:
    if not dist.is_initialized():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _block_lists(model: nn.Module) -> list[nn.ModuleList]:
    """Every `layers` ModuleList (LLM decoder layers, vision encoder layers), wherever PEFT put them."""
    return [m for name, m in model.named_modules()
            if isinstance(m, nn.ModuleList) and name.rsplit(".", 1)[-1] == "layers"]


def device_mesh(device: torch.device, shape: list[int] | None):
    """The ranks' mesh on `device`'s type (FSDP2's default mesh takes the accelerator whenever one is
    visible, even for ranks on CPU): 1-D, or [replicate, shard] for HSDP."""
    from torch.distributed.device_mesh import init_device_mesh

    world = dist.get_world_size()
    if not shape:
        return init_device_mesh(device.type, (world,), mesh_dim_names=("shard",))
    if len(shape) != 2 or shape[0] * shape[1] != world:
        raise ValueError(f"train.mesh={shape}: expected [replicate, shard] with replicate × shard = {world} "
                         "processes (e.g. [nodes, GPUs per node])")
    return init_device_mesh(device.type, tuple(shape), mesh_dim_names=("replicate", "shard"))


def shard_model(model: nn.Module, bf16: bool, device: torch.device, stage: str = "projector+llm",
                mesh_shape: list[int] | None = None) -> str:
    """Apply FSDP2 as the stage asks (module docstring); returns what was done, for the log."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = device_mesh(device, mesh_shape)
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else \
        MixedPrecisionPolicy()
    kind = "HSDP " + "×".join(map(str, mesh_shape)) if mesh_shape else f"FSDP2 over {dist.get_world_size()} ranks"
    if stage == "projector":
        frozen = {p for p in model.parameters() if not p.requires_grad}
        fully_shard(model, mesh=mesh, mp_policy=mp, ignored_params=frozen)
        return f"{kind}: the projector sharded, the frozen LLM and vision tower whole on every rank"
    keep = stage == "projector+lora"  # a frozen base: gather once per micro-batch
    for layers in _block_lists(model):
        for i, block in enumerate(layers):
            fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=not keep and i < len(layers) - 1)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=not keep)
    return f"{kind}: one unit per transformer block + the root" + (", kept gathered through backward" if keep else "")
