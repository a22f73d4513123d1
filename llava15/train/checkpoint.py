"""Resumable training checkpoints: atomic, keep-last-K, exact resume.

Layout of `output_dir/checkpoints/step-000123/`:
`model.pt` (trainable parameters only: frozen ones are rebuilt identically from the recipe's sources),
`optimizer.pt`, `state.json` (step, samples seen, scheduler state, sampler state), `rng-rank{r}.pt`
(Python, NumPy, torch CPU and CUDA generators of each rank), `recipe.yaml`.

Atomicity: everything is written into `checkpoints/.tmp-step-000123/`, each file and the folder are
fsynced, then the folder is renamed to `step-000123` and the parent fsynced. A crash during a save
leaves only a `.tmp-*` folder, which is ignored and removed by the next save; the latest complete
checkpoint is always intact. Under FSDP2 all ranks take part in gathering full state dicts; rank 0
writes the model and optimizer, each rank its own RNG file.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from llava15.train.distributed import DistInfo, barrier

PREFIX = "step-"
_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
_LOAD = StateDictOptions(full_state_dict=True, strict=False)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict:
    # numpy's key array goes in as a tensor so that the file loads with torch.load(weights_only=True).
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
             and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def resolve_resume(resume: str, output_dir: str | Path) -> Path | None:
    """`auto` → latest checkpoint in output_dir (None if none); `none` → None; else that path."""
    if resume in ("none", "", "false", "False"):
        return None
    if resume == "auto":
        ckpts = list_checkpoints(output_dir)
        return ckpts[-1] if ckpts else None
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"train.resume={resume!r}: {path / 'state.json'} does not exist")
    return path


def save_training_state(output_dir: str | Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                        state: dict[str, Any], dist_info: DistInfo, keep_last: int,
                        recipe_yaml: str = "") -> Path | None:
    """Atomically write a resumable checkpoint for `step`; prune to the last `keep_last`."""
    root = Path(output_dir) / "checkpoints"
    final = root / f"{PREFIX}{step:06d}"
    tmp = root / f".tmp-{PREFIX}{step:06d}"
    if dist_info.is_main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    barrier()
    model_sd = get_model_state_dict(model, options=_GATHER)
    # only parameters: a quantized frozen base (model.quantize) adds its quantization state to the state dict
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    model_sd = {k: v for k, v in model_sd.items() if k in trainable}
    optim_sd = get_optimizer_state_dict(model, optimizer, options=_GATHER)
    rng_file = tmp / f"rng-rank{dist_info.rank}.pt"
    torch.save(rng_state(), rng_file)
    _fsync_file(rng_file)
    barrier()
    if dist_info.is_main:
        torch.save(model_sd, tmp / "model.pt")
        torch.save(optim_sd, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "world_size": dist_info.world_size,
                                                    **state}, indent=1))
        (tmp / "recipe.yaml").write_text(recipe_yaml)
        for f in tmp.iterdir():
            _fsync_file(f)
        _fsync_dir(tmp)
        if final.exists():  # re-saving the same step (e.g. end of run right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in list_checkpoints(output_dir)[:-max(1, keep_last)]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final if dist_info.is_main else None


def load_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        dist_info: DistInfo) -> dict:
    """Restore model, optimizer and this rank's RNG from `path`; return `state.json`'s content."""
    state = json.loads((path / "state.json").read_text())
    model_sd = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing = trainable - set(model_sd)
    unexpected = set(model_sd) - trainable
    if missing or unexpected:
        raise ValueError(f"{path / 'model.pt'}: does not match the model's trainable parameters "
                         f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}); "
                         "was it written by a run with a different train.stage or lora settings?")
    set_model_state_dict(model, model_sd, options=_LOAD)
    optim_sd = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    set_optimizer_state_dict(model, optimizer, optim_sd, options=_LOAD)
    rng_file = path / f"rng-rank{dist_info.rank}.pt"
    if state.get("world_size", 1) == dist_info.world_size and rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=True))
    return state


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, unsharded on CPU (rank 0 gets the tensors; collective under FSDP)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
