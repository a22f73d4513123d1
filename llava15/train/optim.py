"""Optimizer and learning-rate schedule of the original recipe.

`param_groups` splits the trainable parameters into decay / no-decay (biases and norm weights never
decay) × projector / rest (the projector may have its own lr, as in the LoRA recipe: 2e-5 against
2e-4), dropping empty groups. `build_optimizer` makes `torch.optim.AdamW` (fused where torch supports
it). `build_scheduler` is HF's `cosine` with warm-up: `ceil(warmup_ratio * total)` steps of linear
warm-up starting at 0 (so the first update uses lr 0, as in the original), then a half cosine to 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llava15.config import TrainConfig

PROJECTOR_KEYS = ("multi_modal_projector", "mm_projector")


def _no_decay_names(model: nn.Module) -> set[str]:
    names = set()
    for mod_name, module in model.named_modules():
        is_norm = isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("Norm")
        for p_name, _ in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if is_norm or "bias" in p_name:
                names.add(full)
    return names


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 projector_lr: float | None = None) -> list[dict]:
    """Trainable parameters in up to four groups: (rest | projector) × (decay | no decay)."""
    no_decay = _no_decay_names(model)
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = (any(k in name for k in PROJECTOR_KEYS), name not in no_decay)
        groups.setdefault(key, []).append(param)
    out = []
    for (is_proj, decays), params in sorted(groups.items()):
        out.append({
            "params": params,
            "lr": projector_lr if (is_proj and projector_lr is not None) else lr,
            "weight_decay": weight_decay if decays else 0.0,
        })
    if not out:
        raise ValueError("no trainable parameters: check train.stage and the freezing table")
    return out


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.projector_lr)
    params = [p for g in groups for p in g["params"]]
    # The fused kernel needs plain tensors of one device type; DTensor (FSDP2) params use foreach.
    plain = all(type(p.data) is torch.Tensor for p in params)
    fused = plain and params[0].device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                             weight_decay=cfg.weight_decay, fused=fused or None,
                             foreach=None if fused else True)


def lr_factor(step: int, total_steps: int, warmup_steps: int, kind: str = "cosine") -> float:
    """Multiplier of the peak lr used by the update numbered `step` (0-based)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if kind == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    return math.ceil(warmup_ratio * total_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, cfg: TrainConfig
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = warmup_steps_for(total_steps, cfg.warmup_ratio)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, cfg.lr_scheduler))
