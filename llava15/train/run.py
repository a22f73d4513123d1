"""`llava15 train RECIPE.yaml [key=value ...] [--dry-run]`: the recipe runner.

Reads as the training story: setup (process group, model, freezing, data plan, optimizer, resume)
→ loop (one optimizer step per global batch, logging, periodic checkpoints) → save (resumable state,
the final self-describing checkpoint in `output_dir/final/`, the projector alone for stage 1, the
LoRA adapter for LoRA runs). Stage 1, stage 2 and LoRA differ only in the recipe.

Launch on many devices with `torchrun --nproc_per_node N -m llava15.cli train RECIPE ...`.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from llava15.config import RecipeConfig, load_recipe, recipe_to_dict
from llava15.train import checkpoint as ckpt
from llava15.train.batches import BatchPlan
from llava15.train.data import build_data
from llava15.train.distributed import cleanup, init_distributed
from llava15.train.final import save_final
from llava15.train.host_memory import keep_freed_host_memory
from llava15.train.logging import MetricsLogger, peak_memory_mib, say
from llava15.train.loop import train_step
from llava15.train.optim import build_optimizer, build_scheduler
from llava15.train.setup import build_model


def main(args) -> int:
    cfg = load_recipe(args.recipe, list(args.overrides or []))
    if getattr(args, "dry_run", False):
        cfg.train.dry_run = True
    train(cfg)
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
    recipe_yaml = yaml.safe_dump(recipe_to_dict(cfg), sort_keys=False)

    # --- setup -------------------------------------------------------------------------------------
    built = build_model(cfg, dist)
    model, tok, image, ctx = built.model, built.tokenizer, built.image, built.step
    dataset, order, collate = build_data(cfg, tok, image, model.config, dist, built.packed_attention)
    plan = BatchPlan(len(dataset), t_cfg.global_batch_size, t_cfg.micro_batch_size, dist.world_size,
                     order, epochs=t_cfg.epochs, max_steps=t_cfg.max_steps)
    say(f"batching: {plan.describe()}", dist.is_main)
    optimizer = build_optimizer(model, t_cfg)
    scheduler = build_scheduler(optimizer, plan.total_steps, t_cfg)

    start = 0
    resume_from = None if t_cfg.dry_run else ckpt.resolve_resume(t_cfg.resume, out)
    if resume_from is not None:
        state = ckpt.load_training_state(resume_from, model, optimizer, dist)
        scheduler.load_state_dict(state["scheduler"])
        start = state["step"]
        say(f"resumed from {resume_from} at step {start}/{plan.total_steps}", dist.is_main)
    end = min(plan.total_steps, start + 2) if t_cfg.dry_run else plan.total_steps
    logger = MetricsLogger(out, plan.total_steps, start, enabled=dist.is_main and not t_cfg.dry_run,
                           tensorboard=t_cfg.tensorboard, wandb=t_cfg.wandb, run_config=recipe_to_dict(cfg),
                           log_steps=t_cfg.log_steps)
    if dist.is_main and not t_cfg.dry_run:
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.yaml").write_text(recipe_yaml)

    # --- loop --------------------------------------------------------------------------------------
    model.train()
    step_times = []
    for step in range(start, end):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        micro = [collate([dataset[i] for i in idx]) for idx in plan.micro_batches(step, dist.rank)]
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
        done = step + 1
        if t_cfg.save_steps and done % t_cfg.save_steps == 0 and done < plan.total_steps \
                and not t_cfg.dry_run:
            _save_state(out, done, model, optimizer, scheduler, plan, dist, t_cfg.save_total_limit,
                        recipe_yaml)
    logger.close()

    if t_cfg.dry_run:
        per_step = step_times[-1] if step_times else 0.0
        say(f"dry run: {len(step_times)} steps, last step {per_step:.2f} s, peak memory "
            f"{peak_memory_mib(dist.device):.0f} MiB; projected time for {plan.total_steps} steps: "
            f"{per_step * plan.total_steps / 3600:.2f} h", dist.is_main)
        cleanup()
        return out

    # --- save --------------------------------------------------------------------------------------
    _save_state(out, end, model, optimizer, scheduler, plan, dist, t_cfg.save_total_limit, recipe_yaml)
    save_final(model, tok, image, cfg, out, dist)
    say(f"done: {end} steps; final checkpoint in {out / 'final'}", dist.is_main)
    cleanup()
    return out


def _save_state(out, step, model, optimizer, scheduler, plan, dist, keep, recipe_yaml) -> None:
    state = {"scheduler": scheduler.state_dict(), "samples_seen": step * plan.global_batch,
             "epoch": plan.epoch_of(step)}
    ckpt.save_training_state(out, step, model, optimizer, state, dist, keep, recipe_yaml)
