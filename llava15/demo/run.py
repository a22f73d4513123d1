"""`llava15 demo`: LLaVA-1.5's whole method on the synthetic world, on a laptop CPU, in minutes.

The story: synthesise the world (images, stage-1 captions, the stage-2 mixture with the paper's
response-format prompts, evaluation sets in the official layouts) → train a tokenizer on its corpus →
make a small vision tower and LM from scratch (no pretrained weights can be downloaded) → stage 1 →
stage 2 → `eval run` on the synthetic benchmarks with the real metrics → results table, chart and
`results.json` → one chat answer with and without the format prompt.

Stage 1 and stage 2 run through `llava15.train.run.train` with the recipes `llava15/recipes/demo_stage1.yaml`
and `llava15/recipes/demo_stage2.yaml`. Differences from the paper, all because nothing pretrained can be
downloaded here: the vision tower is first pretrained on the synthetic world with dense per-patch labels
(`demo.vision_pretrain`, the stand-in for CLIP's pretraining), and the LM starts from random weights,
so stage 1 trains projector + LM (tower frozen) rather than the projector alone; stage 2 then starts
from stage 1's whole checkpoint and trains projector + LM with the tower frozen, as the paper does.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from llava15.demo.common import (
    SMOKE_MAX_NEW_TOKENS,
    SMOKE_TRAIN,
    SMOKE_VISION_PRETRAIN_IMAGES,
    SMOKE_WORLD,
    VISION_PRETRAIN_IMAGES,
    WORLD,
    clear_previous_outputs,
    evaluate,
    example_chat,
    make_from_scratch_towers,
    print_example_chat,
    say,
    train_stage1,
    train_stage2,
    write_results,
)


def print_summary(results: dict[str, Any]) -> None:
    rows = [("VQA-like accuracy", results["vqa_accuracy"], 0.85), ("POPE-like F1", results["pope_f1"], 0.85),
            ("answer-format compliance", results["format_compliance"], 0.98)]
    say("results")
    print(f"  {'metric':<28}{'value':>8}{'target':>9}")
    for name, value, target in rows:
        shown = "n/a" if value is None else f"{value:.3f}"
        print(f"  {name:<28}{shown:>8}{target:>9.2f}")
    print(f"  {'seconds':<28}{results['seconds']:>8.0f}")


def run_demo(args: argparse.Namespace) -> int:
    if getattr(args, "overwrite", False):
        clear_previous_outputs(Path(args.out).resolve(), keep=getattr(args, "checkpoint", None))
    if getattr(args, "action", None) == "pretrain":
        from llava15.demo.pretrain import run_pretrain

        return run_pretrain(args)
    if getattr(args, "llm", None) == "smollm2":
        from llava15.demo.showcase import run_showcase

        return run_showcase(args)
    if getattr(args, "ablations", False):
        from llava15.demo.ablations import run_ablations

        return run_ablations(args)
    if args.eval_only:
        return eval_only(args)
    from llava15.demo.world import synthesize

    start = time.time()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    say(f"synthesising the world (seed {args.seed}) → {out / 'data'}")
    smoke = bool(getattr(args, "smoke", False))
    world = synthesize(out / "data", seed=args.seed, **(SMOKE_WORLD if smoke else WORLD))
    extra = SMOKE_TRAIN if smoke else []
    init = out / "init"
    vision_dir, llm_dir = make_from_scratch_towers(
        init, Path(world["corpus"]), args.seed, SMOKE_VISION_PRETRAIN_IMAGES if smoke else VISION_PRETRAIN_IMAGES)
    stage1 = train_stage1(world, vision_dir, llm_dir, out / "stage1", extra)
    stage2 = train_stage2(world, stage1, out / "stage2", extra)
    checkpoint = stage2 / "final"
    train_seconds = time.time() - start
    say("evaluating on the synthetic benchmarks")
    metrics = evaluate(checkpoint, Path(world["eval"]["root"]), out / "eval",
                       SMOKE_MAX_NEW_TOKENS if smoke else None)
    example_image = sorted(Path(world["eval"]["pope"]["image_folder"]).glob("*.png"))[0]
    chat = example_chat(checkpoint, example_image, "What color is the shape in the center?",
                        SMOKE_MAX_NEW_TOKENS if smoke else 48)
    results = {k: metrics[k] for k in ("vqa_accuracy", "pope_f1", "format_compliance")}
    results.update(seconds=time.time() - start, train_seconds=train_seconds, checkpoint=str(checkpoint),
                   eval_data=world["eval"]["root"], stage1=str(stage1), stage2=str(stage2),
                   report=str(out / "eval" / "report.md"), chart=str(out / "eval" / "chart.png"),
                   example_chat={"image": str(example_image), **chat}, scores=metrics["scores"])
    path = write_results(out, results)
    print_summary(results)
    print_example_chat(example_image, chat)
    say(f"artifacts: checkpoint {checkpoint} | report {results['report']} | chart {results['chart']} | "
        f"results {path}")
    return 0


def eval_only(args: argparse.Namespace) -> int:
    """Evaluate an existing demo checkpoint on a freshly synthesised evaluation set of `args.seed`."""
    from llava15.demo.world import synthesize

    if not args.checkpoint:
        raise SystemExit("llava15 demo --eval-only needs --checkpoint DIR")
    start = time.time()
    out = Path(args.out).resolve()
    n_eval = (SMOKE_WORLD if getattr(args, "smoke", False) else WORLD)["n_eval"]
    world = synthesize(out / "data", seed=args.seed, n_train=0, n_eval=n_eval)
    metrics = evaluate(Path(args.checkpoint), Path(world["eval"]["root"]), out / "eval",
                       SMOKE_MAX_NEW_TOKENS if getattr(args, "smoke", False) else None)
    results = {k: metrics[k] for k in ("vqa_accuracy", "pope_f1", "format_compliance")}
    results.update(seconds=time.time() - start, checkpoint=str(args.checkpoint), eval_data=world["eval"]["root"],
                   scores=metrics["scores"])
    write_results(out, results)
    print_summary(results)
    return 0
