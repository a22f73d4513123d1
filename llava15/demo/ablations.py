"""`llava15 demo --ablations`: Table 1's two main effects of LLaVA-1.5, in miniature on the synthetic world.

Table 1 of the paper credits LLaVA-1.5's gains mostly to two changes: the response-format prompts in the
stage-2 data (which teach the model *when* to answer briefly, so short-answer benchmarks stop being scored
against long replies) and the two-layer MLP projector replacing the single Linear. Three variants isolate
them, each a one-change difference from the full recipe:

| variant | projector | stage-2 format prompts |
| --- | --- | --- |
| `mlp_format` | MLP (mlp2x_gelu) | kept: the demo as it is |
| `linear_format` | Linear | kept |
| `mlp_noformat` | MLP (mlp2x_gelu) | SHORT_ANSWER and MULTIPLE_CHOICE lines removed |

Everything else is shared, so the differences are the ablated change and training noise only: one
synthetic world, the demo's pretrained tower and world-LM, the demo's recipes and stage-1 alignment term
(each projector is fitted to the world-LM's symbolic scenes, a linear one too). `mlp_noformat` reuses
`mlp_format`'s stage 1, which has the same config. All three are evaluated on the same benchmarks
*with* the format prompts: asking the no-format model in a format it never saw is the point, since
that is how the benchmarks ask. Outputs go to `out/ablations/`: `ablations.json`, `ablations.md` and
`ablations.png`.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava15.demo import common as demo
from llava15.demo.scoring import evaluate
from llava15.demo.world.text import MULTIPLE_CHOICE, SHORT_ANSWER

METRICS = {"vqa_accuracy": "VQA-like accuracy", "pope_f1": "POPE-like F1",
           "format_compliance": "answer-format compliance"}
# Only the two prompts Table 1 ablates; the caption and region prompts are part of those tasks' wording.
ABLATED_PROMPTS = frozenset({SHORT_ANSWER, MULTIPLE_CHOICE})


@dataclass(frozen=True)
class Variant:
    name: str
    projector: str  # model.projector of stage 1; stage 2 inherits it through model.init_checkpoint
    format_prompts: bool
    description: str


VARIANTS = (
    Variant("mlp_format", "mlp2x_gelu", True, "LLaVA-1.5: MLP projector, stage-2 data with format prompts"),
    Variant("linear_format", "linear", True, "Linear projector (original LLaVA), stage-2 data with format prompts"),
    Variant("mlp_noformat", "mlp2x_gelu", False,
            "MLP projector, stage-2 data without the short-answer / multiple-choice format prompts"),
)


def write_noformat_data(src: Path, dst: Path) -> dict[str, int]:
    """Copy the stage-2 records of `src` to `dst` with every SHORT_ANSWER / MULTIPLE_CHOICE line dropped
    from the human turns; returns {"records": ..., "prompts_removed": ...}."""
    records = json.loads(Path(src).read_text(encoding="utf-8"))
    removed = 0
    for record in records:
        for turn in record["conversations"]:
            if turn["from"] != "human":
                continue
            lines = turn["value"].split("\n")
            kept = [line for line in lines if line not in ABLATED_PROMPTS]
            removed += len(lines) - len(kept)
            turn["value"] = "\n".join(kept)  # the `<image>` line and every other line stay as they were
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # The same serialisation as the synthesiser's write_json, so only the prompt lines differ.
    dst.write_text(json.dumps(records, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"records": len(records), "prompts_removed": removed}


def run_ablations(args: argparse.Namespace) -> int:
    """Train and evaluate the three variants (module docstring); write and print the comparison."""
    from llava15.demo.world import synthesize

    start = time.time()
    out = Path(args.out).resolve()
    root = out / "ablations"
    root.mkdir(parents=True, exist_ok=True)
    smoke = bool(getattr(args, "smoke", False))
    # Read through the demo module at run time: its sizes are the single source of truth.
    extra = list(demo.SMOKE_TRAIN) if smoke else []
    max_new_tokens = demo.SMOKE_MAX_NEW_TOKENS if smoke else None

    demo.say(f"ablations: synthesising the world (seed {args.seed}) → {out / 'data'}")
    world = synthesize(out / "data", seed=args.seed, **(demo.SMOKE_WORLD if smoke else demo.WORLD))
    vision_dir, llm_dir = demo.pretrained_parts()
    noformat = root / "data" / "finetune_noformat.json"
    counts = write_noformat_data(Path(world["finetune"]["data_path"]), noformat)
    demo.say(f"no-format stage-2 data: {counts['prompts_removed']} prompts removed from "
             f"{counts['records']} records → {noformat}")

    stage1_by_projector: dict[str, Path] = {}
    results: dict[str, dict[str, Any]] = {}
    for v in VARIANTS:
        folder = root / v.name
        if v.projector not in stage1_by_projector:  # stage 1 never sees stage-2 data: share it per projector
            captions = demo.train_stage1(
                world, vision_dir, llm_dir, folder / "stage1", [f"model.projector={v.projector}", *extra])
            stage1_by_projector[v.projector], _ = demo.align_stage1(world, captions, folder / "stage1_align", smoke)
        stage1 = stage1_by_projector[v.projector]
        # The projector type travels in the stage-1 checkpoint's config (projector_hidden_act).
        stage2 = demo.train_stage2(world, stage1, folder / "stage2", extra,
                                   data_path=None if v.format_prompts else noformat)
        checkpoint = stage2 / "final"
        demo.say(f"ablations: evaluating {v.name}")
        metrics = evaluate(checkpoint, Path(world["eval"]["root"]), folder / "eval", max_new_tokens, blind=False)
        results[v.name] = {**{k: metrics[k] for k in METRICS}, "checkpoint": str(checkpoint),
                           "stage1": str(stage1 / "final"), "projector": v.projector,
                           "format_prompts": v.format_prompts, "description": v.description}

    summary = {"variants": results, "seconds": time.time() - start, "smoke": smoke, "seed": args.seed,
               "noformat_data": {"path": str(noformat), **counts}}
    (root / "ablations.json").write_text(json.dumps(summary, indent=2))
    table = markdown_table(results)
    (root / "ablations.md").write_text(f"# Table 1 in miniature (seed {args.seed}{', smoke' if smoke else ''})"
                                       f"\n\n{table}\n")
    chart(results, root / "ablations.png")
    demo.say("ablations")
    print(table)
    demo.say(f"artifacts: {root / 'ablations.json'} | {root / 'ablations.md'} | {root / 'ablations.png'}")
    return 0


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"  # None: the benchmark gave no score


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    header = ["variant", "projector", "format prompts", *METRICS.values()]
    rows = [[name, r["projector"], "yes" if r["format_prompts"] else "no", *(_shown(r[k]) for k in METRICS)]
            for name, r in results.items()]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def chart(results: dict[str, dict[str, Any]], path: Path) -> Path:
    """Grouped bars: one group per metric, one bar per variant, on the shared 0-1 axis."""
    import matplotlib  # lazily: only drawing needs it, and Agg works without a display

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(results)
    for k, (name, r) in enumerate(results.items()):
        heights = [r[m] or 0.0 for m in METRICS]
        ax.bar([x + (k - (len(results) - 1) / 2) * width for x in range(len(METRICS))], heights, width,
               label=name)
    ax.set_xticks(range(len(METRICS)))
    ax.set_xticklabels(list(METRICS.values()))
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title("Table 1 in miniature: projector and format-prompt ablations (n/a drawn as 0)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
