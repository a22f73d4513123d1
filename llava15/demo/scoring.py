"""How the demo's model is judged: `eval run` on the synthetic benchmarks, then figures a reader can check.

`evaluate(checkpoint, world, out)` runs `llava15 eval run` (the official layouts, prompts and metrics)
on the six synthetic benchmarks, then adds what makes the numbers believable:
- `per_kind`: exact-match accuracy per VQA question kind (colour, shape, count, …) with the real image
  and with a blank one (`blind_accuracy`): the same questions asked about a plain grey image of the same
  size, the blind baseline — what the model answers from the question alone;
- `blind_vqa_accuracy`: the VQAv2-like score on those blank images;
- `pope_yes_ratio`: how often the model answers "yes" to POPE's half-yes, half-no questions (a model
  that says "yes" to everything scores F1 0.67);
- `format_compliance`: the share of format-prompted answers that follow their prompt.
`chat_examples` asks the model a few fresh questions and keeps one right and one wrong answer, if any.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path
from typing import Any

from llava15.demo.world.text import MULTIPLE_CHOICE as LETTER_PROMPT
from llava15.demo.world.text import SHORT_ANSWER as SHORT_PROMPT

EVAL_BENCHMARKS = "vqav2,pope,mme,scienceqa,mmbench,textvqa"
BLANK_COLOR = (128, 128, 128)


def run_eval(checkpoint: Path, root: Path, out: Path, benchmarks: str, max_new_tokens: int | None) -> dict:
    from llava15.eval.runner import run_eval as eval_run

    eval_run(argparse.Namespace(model=str(checkpoint), benchmarks=benchmarks, data_root=str(root), out=str(out),
                                batch_size=32, limit=0, judge_url=None, judge_model=None, device=None,
                                max_new_tokens=max_new_tokens, bootstrap=0))
    return json.loads((out / "scores.json").read_text())["results"]


def blank_copy(eval_root: Path, dst: Path) -> Path:
    """The VQAv2-like set with every image replaced by a plain grey image of its size."""
    from PIL import Image

    src = eval_root / "vqav2"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst / "vqav2", ignore=shutil.ignore_patterns("*.png"))
    for image in (src / "test2015").glob("*.png"):
        with Image.open(image) as im:
            Image.new("RGB", im.size, BLANK_COLOR).save(dst / "vqav2" / "test2015" / image.name)
    return dst


def _answers(path: Path) -> dict[str, str]:
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {str(r["question_id"]): str(r.get("text", "")) for r in rows}


def per_kind_accuracy(eval_root: Path, answers: Path) -> dict[str, float]:
    """Exact match (after VQA normalisation) against each question's answer, per question kind."""
    from llava15.eval.metrics import normalize_answer

    vqa = eval_root / "vqav2"
    kinds = json.loads((vqa / "question_kinds.json").read_text())
    truth = {str(a["question_id"]): a["multiple_choice_answer"]
             for a in json.loads((vqa / "v2_mscoco_test-dev2015_annotations.json").read_text())["annotations"]}
    given = _answers(answers)
    hits: dict[str, list[bool]] = {}
    for qid, kind in kinds.items():
        hits.setdefault(kind, []).append(normalize_answer(given.get(qid, "")) == normalize_answer(truth[qid]))
    return {k: round(sum(v) / len(v), 4) for k, v in sorted(hits.items())}


def _fraction(scores: dict, bench: str) -> float | None:
    value = scores.get(bench, {}).get("value")
    if value is None:
        return None
    return value / 100 if value > 1 else value  # reports use percent; results.json uses fractions


def pope_yes_ratio(scores: dict[str, Any]) -> float | None:
    """Share of "yes" answers over POPE's splits together (each split's own ratio is in its metrics)."""
    splits = ((scores.get("pope") or {}).get("metrics") or {}).get("splits") or {}
    n = sum(s["n"] for s in splits.values())
    return round(sum(s["TP"] + s["FP"] for s in splits.values()) / n, 4) if n else None


def evaluate(checkpoint: Path, eval_root: Path, out: Path, max_new_tokens: int | None = None,
             blind: bool = True) -> dict[str, Any]:
    """The demo's figures for one checkpoint (module docstring)."""
    scores = run_eval(checkpoint, eval_root, out, EVAL_BENCHMARKS, max_new_tokens)
    result: dict[str, Any] = {"vqa_accuracy": _fraction(scores, "vqav2"), "pope_f1": _fraction(scores, "pope"),
                              "format_compliance": format_compliance(out),
                              "pope_yes_ratio": pope_yes_ratio(scores)}
    real = per_kind_accuracy(eval_root, out / "vqav2" / "answers.jsonl")
    if blind:
        blank_root = blank_copy(eval_root, out.parent / "eval_blank_data")
        blind_scores = run_eval(checkpoint, blank_root, out.parent / "eval_blank", "vqav2", max_new_tokens)
        result["blind_vqa_accuracy"] = _fraction(blind_scores, "vqav2")
        without = per_kind_accuracy(blank_root, out.parent / "eval_blank" / "vqav2" / "answers.jsonl")
    else:
        result["blind_vqa_accuracy"], without = None, {}
    result["per_kind"] = {k: {"accuracy": v, "blind_accuracy": without.get(k)} for k, v in real.items()}
    result["scores"] = scores
    return result


def complies(prompt: str, answer: str) -> bool | None:
    """Does the answer follow the response-format prompt of its question? None: no format prompt."""
    answer = answer.strip()
    if LETTER_PROMPT in prompt:
        return re.fullmatch(r"[A-E]", answer) is not None
    if SHORT_PROMPT in prompt:
        return 0 < len(answer.split()) <= 3 and not answer.endswith(".")
    return None


def format_compliance(eval_out: Path) -> float:
    """Share of answers, over all format-prompted questions, that follow their format prompt."""
    checks = []
    for answers in sorted(eval_out.glob("*/answers.jsonl")):
        for line in answers.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            ok = complies(str(rec.get("prompt", "")), str(rec.get("text", rec.get("prediction", ""))))
            if ok is not None:
                checks.append(ok)
    return sum(checks) / len(checks) if checks else 0.0


def chat_examples(checkpoint: Path, eval_root: Path, answers: Path, max_new_tokens: int = 48) -> dict[str, Any]:
    """One VQA question the model got right and one it got wrong (if any), asked again in a chat with and
    without the format prompt, and a free description of the first image."""
    from llava15.eval.metrics import normalize_answer
    from llava15.infer.engine import load_generation_bundle

    vqa = eval_root / "vqav2"
    questions = [json.loads(line) for line in (vqa / "llava_vqav2_mscoco_test-dev2015.jsonl").read_text().splitlines()]
    truth = {str(a["question_id"]): a["multiple_choice_answer"]
             for a in json.loads((vqa / "v2_mscoco_test-dev2015_annotations.json").read_text())["annotations"]}
    given = _answers(answers)
    right = next((q for q in questions if normalize_answer(given.get(str(q["question_id"]), "")) ==
                  normalize_answer(truth[str(q["question_id"])])), None)
    wrong = next((q for q in questions if normalize_answer(given.get(str(q["question_id"]), "")) !=
                  normalize_answer(truth[str(q["question_id"])])), None)
    bundle = load_generation_bundle(str(checkpoint))
    out: dict[str, Any] = {}
    for label, q in (("right", right), ("wrong", wrong)):
        if q is None:
            continue
        question = q["text"].replace(f"\n{SHORT_PROMPT}", "")
        image = str(vqa / "test2015" / q["image"])
        prompts = [f"<image>\n{question}\n{SHORT_PROMPT}", f"<image>\n{question}"]
        replies = bundle.generate([[{"role": "user", "content": p}] for p in prompts], [[image], [image]],
                                  max_new_tokens=max_new_tokens, temperature=0.0)
        out[label] = {"image": image, "question": question, "expected": truth[str(q["question_id"])],
                      "with_format_prompt": replies[0], "without_format_prompt": replies[1]}
    first = str(vqa / "test2015" / questions[0]["image"])
    out["description"] = {"image": first, "reply": bundle.generate(
        [[{"role": "user", "content": "<image>\nDescribe the image concisely."}]], [[first]],
        max_new_tokens=max_new_tokens, temperature=0.0)[0]}
    return out


def print_chat_examples(examples: dict[str, Any], say) -> None:
    for label in ("right", "wrong"):
        if label in examples:
            e = examples[label]
            say(f"a question it answers {label}ly ({Path(e['image']).name}, expected {e['expected']!r}):")
            print(f"  user: {e['question']}\n  with the format prompt: {e['with_format_prompt']!r}\n"
                  f"  without it: {e['without_format_prompt']!r}")
    if "description" in examples:
        print(f"  describe {Path(examples['description']['image']).name}: {examples['description']['reply']!r}")
