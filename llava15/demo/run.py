"""`llava15 demo`: LLaVA-1.5's whole method on the synthetic world, on a laptop CPU, in minutes.

The story, the paper's: synthesise the world (images, stage-1 captions, the stage-2 mixture with the
paper's response-format prompts, evaluation sets in the official layouts) → take the pretrained parts,
as the paper takes CLIP and Vicuna: the demo's vision tower and world-LM (`llava15 demo pretrain` made
them from the synthetic world, never from this run's images; the package ships them, hashes checked)
→ stage 1: the projector alone learns on captions, LM and tower frozen, `plain` template, then is
fitted to the world-LM's symbolic scenes of the same images (`demo.align`, the alignment term) → stage 2:
projector + LM on the mixture, tower frozen → `eval run` on the synthetic benchmarks with the real
metrics, plus the figures that make them believable (`demo.scoring`: per question kind, with a blank
image as the blind baseline, POPE's yes-ratio) → results table, `results.json`, chat examples.

Stage 1 and stage 2 run through `llava15.train.run.train` with the recipes
`llava15/recipes/demo_stage1.yaml` and `demo_stage2.yaml`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from llava15.demo.common import (
    SMOKE_MAX_NEW_TOKENS,
    SMOKE_TRAIN,
    SMOKE_WORLD,
    WORLD,
    align_stage1,
    clear_previous_outputs,
    pretrained_parts,
    say,
    train_stage1,
    train_stage2,
    write_results,
)
from llava15.demo.scoring import chat_examples, evaluate, print_chat_examples

TARGETS = {"vqa_accuracy": 0.85, "pope_f1": 0.85, "format_compliance": 0.98}


def print_summary(results: dict[str, Any]) -> None:
    rows = [("VQA-like accuracy", results["vqa_accuracy"], TARGETS["vqa_accuracy"]),
            ("  with blank images", results.get("blind_vqa_accuracy"), None),
            ("POPE-like F1", results["pope_f1"], TARGETS["pope_f1"]),
            ("  POPE yes-ratio", results.get("pope_yes_ratio"), None),
            ("answer-format compliance", results["format_compliance"], TARGETS["format_compliance"])]
    say("results")
    print(f"  {'metric':<28}{'value':>8}{'target':>9}")
    for name, value, target in rows:
        shown = "n/a" if value is None else f"{value:.3f}"
        print(f"  {name:<28}{shown:>8}{'' if target is None else f'{target:.2f}':>9}")
    if results.get("per_kind"):
        print(f"  {'question kind':<28}{'image':>8}{'blank':>9}")
        for kind, acc in results["per_kind"].items():
            blank = acc.get("blind_accuracy")
            print(f"  {kind:<28}{acc['accuracy']:>8.3f}{'n/a' if blank is None else f'{blank:.3f}':>9}")
    print(f"  {'seconds':<28}{results['seconds']:>8.0f}")


def run_demo(args: argparse.Namespace) -> int:
    if getattr(args, "action", None) == "pretrain":
        from llava15.demo.pretrain import run_pretrain

        return run_pretrain(args)
    if getattr(args, "overwrite", False):
        clear_previous_outputs(Path(args.out).resolve(), keep=getattr(args, "checkpoint", None))
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
    smoke = bool(getattr(args, "smoke", False))
    vision_dir, llm_dir = pretrained_parts()
    say(f"pretrained parts: vision tower {vision_dir}, world-LM {llm_dir} (hashes checked)")
    say(f"synthesising the world (seed {args.seed}) → {out / 'data'}")
    world = synthesize(out / "data", seed=args.seed, **(SMOKE_WORLD if smoke else WORLD))
    extra = SMOKE_TRAIN if smoke else []
    stage1 = train_stage1(world, vision_dir, llm_dir, out / "stage1", extra)
    aligned, alignment = align_stage1(world, stage1, out / "stage1_align", smoke)
    stage2 = train_stage2(world, aligned, out / "stage2", extra)
    checkpoint = stage2 / "final"
    train_seconds = time.time() - start
    say("evaluating on the synthetic benchmarks (and the VQA-like set with blank images)")
    tokens = SMOKE_MAX_NEW_TOKENS if smoke else None
    eval_root = Path(world["eval"]["root"])
    metrics = evaluate(checkpoint, eval_root, out / "eval", tokens)
    examples = chat_examples(checkpoint, eval_root, out / "eval" / "vqav2" / "answers.jsonl", tokens or 48)
    results = {k: v for k, v in metrics.items() if k != "scores"}
    results.update(seconds=time.time() - start, train_seconds=train_seconds, checkpoint=str(checkpoint),
                   eval_data=str(eval_root), stage1=str(stage1), stage1_alignment=alignment,
                   stage2=str(stage2), pretrained={"vision_tower": str(vision_dir), "world_lm": str(llm_dir)},
                   report=str(out / "eval" / "report.md"), chart=str(out / "eval" / "chart.png"),
                   example_chat=examples, scores=metrics["scores"])
    path = write_results(out, results)
    print_summary(results)
    print_chat_examples(examples, say)
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
    smoke = bool(getattr(args, "smoke", False))
    world = synthesize(out / "data", seed=args.seed, n_train=0, n_eval=(SMOKE_WORLD if smoke else WORLD)["n_eval"])
    metrics = evaluate(Path(args.checkpoint), Path(world["eval"]["root"]), out / "eval",
                       SMOKE_MAX_NEW_TOKENS if smoke else None)
    results = {k: v for k, v in metrics.items() if k != "scores"}
    results.update(seconds=time.time() - start, checkpoint=str(args.checkpoint), eval_data=world["eval"]["root"],
                   scores=metrics["scores"])
    write_results(out, results)
    print_summary(results)
    return 0
