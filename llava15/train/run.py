"""`llava15 train RECIPE [key=value ...] [--dry-run]`: the recipe runner.

Reads as the training story: setup (process group; the data file indexed and gated before any model is
built; the model placed and sharded; the batch plan; optimizer; resume from the latest sharded
checkpoint) → loop (the DataLoader hands each optimizer step its micro-batches, one step, logging, the
sample log, periodic checkpoints) → save (the final self-describing checkpoint in `output_dir/final/`,
the projector alone for stage 1, the LoRA adapter for LoRA runs, `data_report.json`). Stage 1,
stage 2 and LoRA differ only in the recipe.

Launch on many devices with `torchrun --nproc_per_node N -m llava15.cli train RECIPE ...`.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist
import yaml

from llava15.config import RecipeConfig, load_recipe, recipe_to_dict
from llava15.train import checkpoint as ckpt
from llava15.train.batches import BatchPlan
from llava15.train.data import build_data, index_data
from llava15.train.data_report import DataReport, check_bad_fraction
from llava15.train.distributed import cleanup, init_distributed
from llava15.train.final import save_final
from llava15.train.host_memory import keep_freed_host_memory, release_freed_host_memory
from llava15.train.loader import describe_skipped, step_batches
from llava15.train.logging import MetricsLogger, host_rss_mib, peak_memory_mib, say
from llava15.train.loop import train_step
from llava15.train.optim import build_optimizer, build_scheduler
from llava15.train.setup import build_model


def main(args) -> int:
    cfg = load_recipe(args.recipe, list(args.overrides or []))
    if getattr(args, "dry_run", False):
        cfg.train.dry_run = True
    train(cfg)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Everything is saved, flushed and the process group destroyed. What is left is interpreter
        # teardown, where gloo's C++ threads can still hold tensors that the model's device mesh keeps
        # alive; destroying them then aborts the process now and then ("terminate called without an
        # active exception": once in four runs of the test suite), which torchrun reports as a failed run.
        import gc

        gc.collect()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: RecipeConfig) -> Path:
    """Run the recipe; return the output folder."""
    t_cfg = cfg.train
    dist = init_distributed(t_cfg.device)
    seed_everything(t_cfg.seed)
    say(f"device: rank 0 on {dist.device}, {dist.world_size} rank(s)", dist.is_main)
    if dist.device.type == "cpu" and keep_freed_host_memory():
        say("host memory: freed tensors stay in the heap for reuse (glibc mmap/trim thresholds 1 GiB)",
            dist.is_main)
    if t_cfg.dry_run:  # before the model exists: the projection is what tells whether it will fit
        from llava15.train.memory import memory_report

        say(memory_report(cfg, dist.world_size), dist.is_main)
    out = Path(t_cfg.output_dir)
    recipe = recipe_to_dict(cfg)
    recipe_yaml = yaml.safe_dump(recipe, sort_keys=False)

    # --- setup -------------------------------------------------------------------------------------
    resume_from = None if t_cfg.dry_run else ckpt.resolve_resume(t_cfg.resume, out)
    if resume_from is not None:
        changed = ckpt.check_resume_recipe(resume_from, recipe, force=t_cfg.resume == "force")
        if changed:
            say(f"train.resume=force: continuing {resume_from} although {', '.join(changed)} changed", dist.is_main)
    index = index_data(cfg)
    check_bad_fraction(index, cfg.data.max_bad_fraction, cfg.data.image_folder or None)
    built = build_model(cfg, dist)
    model, tok, image, ctx = built.model, built.tokenizer, built.image, built.step
    if dist.device.type == "cpu":
        release_freed_host_memory()  # rank 0 held the whole model while sending the shards
    say(f"rank {dist.rank}: host memory after setup: {host_rss_mib():.0f} MiB")
    dataset, order, collate, lengths = build_data(cfg, index, tok, image, model.config, dist,
                                                  built.packed_attention)
    plan = BatchPlan(len(dataset), t_cfg.global_batch_size, t_cfg.micro_batch_size, dist.world_size,
                     order, epochs=t_cfg.epochs, max_steps=t_cfg.max_steps, lengths=lengths)
    say(f"batching: {plan.describe()}", dist.is_main)
    optimizer = build_optimizer(model, t_cfg)
    scheduler = build_scheduler(optimizer, plan.total_steps, t_cfg)
    saver = ckpt.Checkpointer(out, dist, t_cfg.save_total_limit, recipe_yaml, async_save=t_cfg.async_save)

    start = 0
    if resume_from is not None:
        state = ckpt.load_training_state(resume_from, model, optimizer, dist)
        scheduler.load_state_dict(state["scheduler"])
        start = state["step"]
        say(f"resumed from {resume_from} at step {start}/{plan.total_steps} ({state['samples_consumed']} samples "
            f"consumed, saved by {state['world_size']} rank(s), now {dist.world_size})", dist.is_main)
        say(f"rank {dist.rank}: host memory after loading the checkpoint: {host_rss_mib():.0f} MiB")
    end = min(plan.total_steps, start + 2) if t_cfg.dry_run else plan.total_steps
    logger = MetricsLogger(out, plan.total_steps, start, enabled=dist.is_main and not t_cfg.dry_run,
                           tensorboard=t_cfg.tensorboard, wandb=t_cfg.wandb, run_config=recipe,
                           log_steps=t_cfg.log_steps)
    if dist.is_main and not t_cfg.dry_run:
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.yaml").write_text(recipe_yaml)
    sample_log = SampleLog(t_cfg.sample_log, dist, start) if t_cfg.sample_log and not t_cfg.dry_run else None
    report = DataReport(index)

    # --- loop --------------------------------------------------------------------------------------
    model.train()
    step_times = []
    batches = step_batches(dataset, plan, dist.rank, collate, start, end, cfg.data.num_workers,
                           pin_memory=dist.device.type == "cuda")
    for step, micro in zip(range(start, end), batches):
        t0 = time.perf_counter()
        for batch in micro:
            for line in describe_skipped(batch):
                say(f"rank {dist.rank}: {line}")
            report.add_skipped(batch.get("skipped", []))
        lr = optimizer.param_groups[0]["lr"]
        res = train_step(model, optimizer, scheduler, micro, ctx)
        dt = time.perf_counter() - t0
        step_times.append(dt)
        metrics = {"loss": res.loss, "lr": lr, "epoch": round(plan.epoch_of(step + 1), 4),
                   "samples_per_s": res.samples / dt, "tokens_per_s": res.tokens / dt,
                   "supervised_tokens": res.supervised_tokens, "step_s": round(dt, 4),
                   "memory_mib": round(peak_memory_mib(dist.device), 1)}
        if res.grad_norm is not None:
            metrics["grad_norm"] = res.grad_norm
        logger.log(step + 1, metrics)
        logger.advance(step + 1, metrics)
        if sample_log is not None:
            sample_log.write(step + 1, [i for b in micro for i in b["ids"]])
        done = step + 1
        if t_cfg.save_steps and done % t_cfg.save_steps == 0 and done < plan.total_steps and not t_cfg.dry_run:
            saver.save(done, model, optimizer, _state(scheduler, plan, done))
    logger.close()

    if t_cfg.dry_run:
        _dry_run_report(cfg, dist, plan, step_times)
        cleanup()
        return out

    # --- save --------------------------------------------------------------------------------------
    saver.save(end, model, optimizer, _state(scheduler, plan, end))
    saver.wait()
    save_final(model, tok, image, cfg, out, dist)
    _write_report(report, out, dist)
    say(f"done: {end} steps; final checkpoint in {out / 'final'}", dist.is_main)
    cleanup()
    return out


def _state(scheduler, plan: BatchPlan, step: int) -> dict:
    return {"scheduler": scheduler.state_dict(), "samples_consumed": plan.samples_consumed(step),
            "epoch": plan.epoch_of(step), "global_batch": plan.global_batch}


def _write_report(report: DataReport, out: Path, dist) -> None:
    mine = {"late": dict(report.late), "late_examples": report.late_examples}
    if dist.distributed:
        parts: list = [None] * dist.world_size
        tdist.all_gather_object(parts, mine)
    else:
        parts = [mine]
    if dist.is_main:
        report.late.clear()
        report.late_examples.clear()
        for part in parts:
            report.merge(part)
        path = report.write(out)
        summary = report.to_json()
        say(f"data: {summary['used']} of {summary['records']} records used, {summary['skipped']} skipped "
            f"{summary['skipped_by_reason'] or ''} → {path}")


def _dry_run_report(cfg: RecipeConfig, dist, plan: BatchPlan, step_times: list[float]) -> None:
    per_step = step_times[-1] if step_times else 0.0
    say(f"dry run: {len(step_times)} steps, last step {per_step:.2f} s, peak memory "
        f"{peak_memory_mib(dist.device):.0f} MiB; projected time for {plan.total_steps} steps: "
        f"{per_step * plan.total_steps / 3600:.2f} h", dist.is_main)


class SampleLog:
    """`train.sample_log`: per optimizer step, the record ids each rank consumed (JSONL, `step` from 1).
    On resume the lines past the checkpoint are dropped first, so every step appears once."""

    def __init__(self, path: str, dist, start: int) -> None:
        self.path, self.rank = Path(path), dist.rank
        if dist.is_main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_file():
                kept = [line for line in self.path.read_text().splitlines()
                        if line.strip() and json.loads(line)["step"] <= start]
                self.path.write_text("".join(line + "\n" for line in kept))
        if dist.distributed:
            tdist.barrier()

    def write(self, step: int, ids: list) -> None:
        # one short O_APPEND write per rank and step: lines of concurrent ranks never interleave
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "rank": self.rank, "ids": ids}) + "\n")
