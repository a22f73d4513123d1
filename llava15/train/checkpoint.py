"""Resumable training checkpoints: sharded (`torch.distributed.checkpoint`), atomic, keep-last-K, and
resumable on another number of devices.

Layout of `output_dir/checkpoints/step-000123/` (the state after 123 optimizer steps):
- the DCP files (`.metadata`, `__<rank>_0.distcp`): each rank writes, and on resume reads, only its own
  shards of the trainable parameters and their optimizer state; frozen weights are not saved, the recipe
  rebuilds them identically from their sources. DCP re-shards on load, so a run saved by 4 ranks
  continues on 2;
- `state.json`: step, samples consumed (the global data position), epoch, world size, scheduler state;
- `rng-rank{r}.pt`: each rank's Python, NumPy, torch and CUDA generators (restored when the world size
  is the same);
- `recipe.yaml`: the resolved recipe, compared with the resuming run's (`check_resume_recipe`).

Atomicity: everything is written into `checkpoints/.tmp-step-000123/`; once every rank's part is on
disk, rank 0 fsyncs and renames it to `step-000123` and prunes old ones. A crash during a save leaves
only a `.tmp-*` folder, ignored and removed by the next save: the latest complete checkpoint is always
intact. `train.async_save` writes in a background thread (`dcp.async_save`) while the step loop goes on;
the next save, or the end of the run, waits for it first.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
import yaml
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from llava15.config import ConfigError
from llava15.train.distributed import DistInfo, barrier
from llava15.train.host_memory import peak_rss_mib, release_freed_host_memory, reset_peak_rss
from llava15.train.logging import say

PREFIX = "step-"
_TRAINABLE = StateDictOptions(ignore_frozen_params=True)
_SET_TRAINABLE = StateDictOptions(ignore_frozen_params=True, strict=False)  # frozen weights: from the recipe
# Keys a resumed run may change: where and how often it writes, how it is launched and computed.
RESUMABLE_CHANGES = {
    "train.save_steps", "train.save_total_limit", "train.log_steps", "train.resume", "train.tensorboard",
    "train.wandb", "train.async_save", "train.sample_log", "train.dry_run", "train.device",
    "train.micro_batch_size", "train.activation_checkpointing", "train.gradient_checkpointing",
    "train.compile", "train.mesh", "data.num_workers", "train.output_dir",
}


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


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / "state.json").is_file() and (Path(path) / ".metadata").is_file()


def resolve_resume(resume: str, output_dir: str | Path) -> Path | None:
    """`auto`/`force` → latest checkpoint in output_dir (None if none); `none` → None; else that path."""
    if resume in ("none", "", "false", "False"):
        return None
    if resume in ("auto", "force"):
        ckpts = list_checkpoints(output_dir)
        return ckpts[-1] if ckpts else None
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"train.resume={resume!r}: {path / 'state.json'} does not exist")
    return path


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume_recipe(path: Path, recipe: dict, force: bool) -> list[str]:
    """Keys whose value differs between the checkpoint's recipe and this run's (allowed changes left out);
    a difference is a `ConfigError` naming them unless `force`."""
    saved_file = path / "recipe.yaml"
    if not saved_file.is_file():
        return []
    saved, now = _flat(yaml.safe_load(saved_file.read_text()) or {}), _flat(recipe)
    diff = sorted(k for k in set(saved) | set(now) if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if diff and not force:
        shown = "; ".join(f"{k}: {saved.get(k)!r} → {now.get(k)!r}" for k in diff[:8])
        raise ConfigError(f"{path}: this run's recipe differs from the checkpoint's in {len(diff)} key(s) "
                          f"({shown}); resuming would mix two runs. Use another train.output_dir, "
                          "train.resume=none to start over, or train.resume=force to continue anyway")
    return diff


def trainable_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """This rank's shards of the trainable parameters and their optimizer state. Only parameters: a
    quantized frozen base (`model.quantize`) adds its quantization state to the state dict, and it is
    rebuilt from the recipe like every frozen weight."""
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_TRAINABLE)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in model_sd.items() if k in trainable}, optim_sd


class Checkpointer:
    """Saves and loads the resumable state of one run (see module docstring)."""

    def __init__(self, output_dir: str | Path, dist_info: DistInfo, keep_last: int, recipe_yaml: str,
                 async_save: bool = False) -> None:
        self.root = Path(output_dir) / "checkpoints"
        self.dist, self.keep_last, self.recipe_yaml, self.async_save = dist_info, keep_last, recipe_yaml, async_save
        self._pending: tuple[Future, Path, Path] | None = None

    def save(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Write the state after `step` optimizer steps (every rank calls it). Each rank logs its peak host
        memory during a synchronous save: every rank writes only its own shards, so none stands out."""
        self.wait()
        # freed training tensors stay in the heap (`train.host_memory`); handed back first, the peak
        # measures what the save itself holds
        measured = not self.async_save and release_freed_host_memory() is not None and reset_peak_rss()
        final, tmp = self.root / f"{PREFIX}{step:06d}", self.root / f".tmp-{PREFIX}{step:06d}"
        if self.dist.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir()
            (tmp / "state.json").write_text(json.dumps({"step": step, "world_size": self.dist.world_size, **state},
                                                       indent=1))
            (tmp / "recipe.yaml").write_text(self.recipe_yaml)
        barrier()
        rng_file = tmp / f"rng-rank{self.dist.rank}.pt"
        torch.save(rng_state(), rng_file)
        _fsync_file(rng_file)
        model_sd, optim_sd = trainable_state(model, optimizer)
        app = {"model": model_sd, "optim": optim_sd}
        if self.async_save:
            self._pending = (dcp.async_save(app, checkpoint_id=str(tmp)), tmp, final)
        else:
            dcp.save(app, checkpoint_id=str(tmp))
            self._commit(tmp, final)
            if measured:
                say(f"rank {self.dist.rank}: peak host RSS during the save of {final.name}: {peak_rss_mib():.0f} MiB",
                    is_main=True)

    def wait(self) -> None:
        """Finish a background save (and make it the latest checkpoint)."""
        if self._pending is not None:
            future, tmp, final = self._pending
            self._pending = None
            future.result()
            self._commit(tmp, final)

    def _commit(self, tmp: Path, final: Path) -> None:
        barrier()  # every rank's shard (and the metadata, written last by the coordinator) is on disk
        if self.dist.is_main:
            for f in tmp.iterdir():
                _fsync_file(f)
            _fsync_dir(tmp)
            if final.exists():  # re-saving the same step (e.g. end of run right after a periodic save)
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(self.root)
            for old in list_checkpoints(self.root.parent)[:-max(1, self.keep_last)]:
                shutil.rmtree(old, ignore_errors=True)
        barrier()


def load_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        dist_info: DistInfo) -> dict:
    """Restore this rank's shards of model and optimizer state and, at the same world size, its RNG;
    return `state.json`'s content."""
    state = json.loads((path / "state.json").read_text())
    model_sd, optim_sd = trainable_state(model, optimizer)
    trainable = set(model_sd)
    saved = set(dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata)
    saved_model = {k[len("model."):] for k in saved if k.startswith("model.")}
    if saved_model != trainable:
        missing, unexpected = sorted(trainable - saved_model), sorted(saved_model - trainable)
        raise ValueError(f"{path}: does not hold this model's trainable parameters (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}); was it written by a run with a different train.stage "
                         "or lora settings?")
    app = {"model": model_sd, "optim": optim_sd}
    dcp.load(app, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=app["model"], optim_state_dict=app["optim"],
                   options=_SET_TRAINABLE)
    rng_file = path / f"rng-rank{dist_info.rank}.pt"
    if state.get("world_size", 1) == dist_info.world_size and rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=True))
    return state


def trainable_from_checkpoint(path: str | Path, model: nn.Module) -> None:
    """Load a checkpoint's trainable parameters into an unsharded model in one process (offline
    conversion); the optimizer state is not read."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    app = {"model": {k: v for k, v in get_model_state_dict(model, options=_TRAINABLE).items() if k in trainable}}
    dcp.load(app, checkpoint_id=str(path), no_dist=True)
    model.load_state_dict(app["model"], strict=False)
