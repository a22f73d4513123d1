"""Pure scoring functions, each exactly the official scorer of a LLaVA-1.5 benchmark (eval.md §3-4).

No I/O here: benchmark modules read files and call these. Every quirk of the official code that
changes a number is reproduced and named in a comment; where the official code would crash (division
by zero, misaligned lengths) we raise or return 0.0 instead, which never changes a published number.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from llava15.eval.vqa_normalize import evalai_process, vqaeval_process

# ---------------------------------------------------------------- VQA accuracy (VQAv2, VizWiz, TextVQA)


def normalize_answer(text: str) -> str:
    """EvalAI / m4c ``EvalAIAnswerProcessor`` normalisation (eval.md §4.2)."""
    return evalai_process(text)


def _leave_one_out(prediction: str, answers: Sequence[str]) -> float:
    """Mean over the leave-one-out subsets of ``min(1, matches among the others / 3)``."""
    if not answers:
        raise ValueError("VQA accuracy needs at least one ground-truth answer, got none")
    accs = []
    for i in range(len(answers)):
        matches = sum(1 for j, a in enumerate(answers) if j != i and a == prediction)
        accs.append(min(1.0, matches / 3))
    return sum(accs) / len(accs)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """m4c ``TextVQAAccuracyEvaluator``: prediction and every answer normalised, then leave-one-out."""
    return _leave_one_out(normalize_answer(prediction), [normalize_answer(a) for a in answers])


def vqaeval_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """GT-Vision-Lab ``vqaEval.py``: normalises only when the answers are not all identical.

    With ten identical answers the raw (whitespace-cleaned) prediction is compared as is, so ``Yes``
    vs ten ``yes`` scores 0. LLaVA's VQAv2/VizWiz uploads are pre-normalised with
    :func:`normalize_answer`, i.e. the server computes ``vqaeval_accuracy(normalize_answer(p), gts)``.
    """

    def clean(s: str) -> str:
        return s.replace("\n", " ").replace("\t", " ").strip()

    pred = clean(prediction)
    gts = [clean(a) for a in answers]
    if len(set(gts)) > 1:
        gts = [vqaeval_process(a) for a in gts]
        pred = vqaeval_process(pred)
    return _leave_one_out(pred, gts)


def vqa_server_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """What the EvalAI server gives a LLaVA upload (VQAv2, VizWiz): vqaEval of the normalised text."""
    return vqaeval_accuracy(normalize_answer(prediction), answers)


def vizwiz_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VizWiz: LLaVA uploads ``EvalAIAnswerProcessor`` text and the EvalAI server scores it with the VQA
    accuracy (10 human answers, leave-one-out) — the same path as VQAv2."""
    return vqa_server_accuracy(prediction, answers)


# ------------------------------------------------------------------------------------- GQA, SEED


def gqa_postprocess(text: str) -> str:
    """``convert_gqa_for_eval.py``: ``text.rstrip('.').lower()``."""
    return text.rstrip(".").lower()


def gqa_match(prediction: str, answer: str) -> bool:
    """GQA ``eval.py`` accuracy term: plain equality of the post-processed prediction and the answer."""
    return gqa_postprocess(prediction) == answer


def seed_match(prediction: str | None, answer: str) -> bool:
    """``convert_seed_for_submission.py``: correct iff the text equals the letter exactly."""
    return prediction is not None and prediction == answer


# ------------------------------------------------------------------------------------- ScienceQA

_SQA_OPTIONS = ("A", "B", "C", "D", "E")
_SQA_PATTERN = re.compile(r"The answer is ([A-Z]).")  # the final "." matches any character


def scienceqa_parse(prediction: str, n_choices: int) -> int:
    """``eval_science_qa.py`` letter parsing → choice index, -1 when unparseable (no strip, no casefold)."""
    if prediction in _SQA_OPTIONS:
        letter = prediction
    elif len(prediction) >= 3 and prediction[0] in _SQA_OPTIONS and prediction[1:3] == ". ":
        letter = prediction[0]
    else:
        found = _SQA_PATTERN.findall(prediction)
        letter = found[0] if len(found) == 1 else "FAILED"
    options = _SQA_OPTIONS[:n_choices]
    return options.index(letter) if letter in options else -1


def scienceqa_scores(rows: Iterable[tuple[str | None, int, int, bool]]) -> dict[str, float]:
    """Accuracy and IMG accuracy over ``(prediction or None, answer index, n_choices, has_image)`` rows.

    ``has_image`` must be what the official scorer sees: the recorded prompt contains ``<image>``
    (a missing prediction gets the placeholder prompt ``Unknown`` and so drops out of the IMG subset).
    """
    total = correct = img_total = img_correct = 0
    for prediction, answer, n_choices, has_image in rows:
        text = "FAILED" if prediction is None else prediction
        hit = scienceqa_parse(text, n_choices) == answer
        in_img = has_image and prediction is not None
        total += 1
        correct += hit
        img_total += in_img
        img_correct += hit and in_img
    return {
        "accuracy": 100.0 * correct / total if total else 0.0,
        "img_accuracy": 100.0 * img_correct / img_total if img_total else 0.0,
        "total": total,
        "correct": correct,
        "img_total": img_total,
        "img_correct": img_correct,
    }


# ------------------------------------------------------------------------------------------ POPE


def pope_parse(text: str) -> str:
    """``eval_pope.py``: first sentence, commas removed, split on single spaces; a ``No``/``not``/``no``
    token means no, anything else (including ``""``, ``NO``, ``Nope``) means yes."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def pope_scores(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and yes-ratio with yes as the positive class (label ``no`` → 0,
    any other label → 1), predictions and labels paired by position."""
    if len(predictions) != len(labels):
        raise ValueError(
            f"POPE: {len(predictions)} predictions but {len(labels)} labels; they are paired by position, "
            "so the answers and the label file do not belong together"
        )
    preds = [0 if pope_parse(p) == "no" else 1 for p in predictions]
    gts = [0 if label == "no" else 1 for label in labels]
    tp = sum(1 for p, g in zip(preds, gts) if p == 1 and g == 1)
    fp = sum(1 for p, g in zip(preds, gts) if p == 1 and g == 0)
    tn = sum(1 for p, g in zip(preds, gts) if p == 0 and g == 0)
    fn = sum(1 for p, g in zip(preds, gts) if p == 0 and g == 1)
    n = len(preds)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": sum(preds) / n if n else 0.0,
        "TP": tp, "FP": fp, "TN": tn, "FN": fn, "n": n,
    }  # fmt: skip


# ------------------------------------------------------------------------------------------- MME

MME_PERCEPTION = (
    "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
)  # fmt: skip
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def mme_parse(prediction: str) -> str:
    """``calculation.py``: the last tab field is read with its trailing newline, lowercased; ``yes``/``no``
    as is, else the first 4 characters: contains ``yes`` → yes, contains ``no`` → no, else ``other``."""
    pred = (prediction + "\n").lower()  # readlines() keeps the newline the converter wrote
    if pred in ("yes", "no"):
        return pred
    head = pred[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def mme_scores(subtasks: Mapping[str, Sequence[Sequence[str]]]) -> dict[str, Any]:
    """Per subtask acc, acc+ (both answers of an image right) and score = 100·acc + 100·acc+, plus the
    perception and cognition totals. Input: ``{subtask: [(image, question, ground_truth, prediction)]}``
    in file order; consecutive lines form an image's pair, as in ``calculation.py``."""
    out: dict[str, Any] = {"subtasks": {}}
    for name, items in subtasks.items():
        if len(items) % 2:
            raise ValueError(f"MME subtask {name!r}: {len(items)} lines, expected pairs (2 per image)")
        correct = plus = 0
        for i in range(0, len(items), 2):
            pair_ok = 0
            for _image, _question, gt, pred in items[i : i + 2]:
                ok = mme_parse(pred) == gt.lower()
                correct += ok
                pair_ok += ok
            plus += pair_ok == 2
        n = len(items)
        acc = correct / n if n else 0.0
        acc_plus = plus / (n // 2) if n else 0.0
        out["subtasks"][name] = {"acc": acc, "acc_plus": acc_plus, "score": 100 * acc + 100 * acc_plus}
    scores = {k: v["score"] for k, v in out["subtasks"].items()}
    out["perception"] = sum(scores.get(k, 0.0) for k in MME_PERCEPTION)
    out["cognition"] = sum(scores.get(k, 0.0) for k in MME_COGNITION)
    return out


# --------------------------------------------------------------------------------------- MMBench

_MMB_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
# VLMEvalKit matching_util.can_infer_option's last rule (its current head): used only when the letter is
# one of the row's options; a letter outside them is ignored and matching goes on.
_MMB_ANSWER_IS = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def is_missing(value: Any) -> bool:
    """An absent MMBench option: None, NaN, or the strings ``""``/``nan``/``none`` (any case)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in ("", "nan", "none")


def is_none(value: Any) -> bool:
    """``model_vqa_mmbench.is_none``: None, a float NaN (what pandas reads for ``NA``, ``N/A``, ``null``,
    an empty cell, ...), or the strings ``nan``/``none`` in any case. A whitespace-only string is a value."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.lower() in ("nan", "none")


def is_na(value: Any) -> bool:
    """``pd.isna`` of one cell (VLMEvalKit's test for an absent option): None or a float NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def mmbench_extract(prediction: str, choices: Mapping[str, str]) -> str | None:
    """VLMEvalKit ``can_infer`` under exact matching: an option letter, ``Z`` (refusal), or None.

    ``can_infer_option``: refusal strings → ``Z``; punctuation ``.()[],:;!*#{}`` to spaces and split;
    exactly one option letter present and first seen among the last 4 tokens → it; no option letter but
    a ``Z`` token → ``Z``; then ``(correct )answer is X`` when X is an option. Otherwise
    ``can_infer_text``: exactly one option text inside the lowercased prediction, the prediction no
    longer than twice the options' total length. (An API-failure message skips the first step.)"""
    prediction = str(prediction)
    letter = None if "Failed to obtain answer via API" in prediction else _infer_option(prediction, choices)
    if letter:
        return letter
    lower = prediction.lower()
    if len(lower) > 2 * sum(len(str(v)) for v in choices.values()):
        return None
    cands = [k for k, v in choices.items() if str(v).lower() in lower]
    return cands[0] if len(cands) == 1 else None


def _infer_option(prediction: str, choices: Mapping[str, str]) -> str | None:
    if any(r in prediction for r in _MMB_REFUSALS):
        return "Z"
    mod = prediction
    for c in ".()[],:;!*#{}":
        mod = mod.replace(c, " ")
    splits = mod.split()
    present = [c for c in choices if c in splits]
    if len(present) == 1:
        if splits.index(present[0]) > len(splits) - 5:  # "B is right one here" gives none
            return present[0]
    elif not present and "Z" in splits:
        return "Z"
    m = _MMB_ANSWER_IS.search(prediction)
    if m and m.group(1).upper() in choices:
        return m.group(1).upper()
    return None


def mmbench_choices(row: Mapping[str, Any]) -> dict[str, str]:
    """VLMEvalKit ``build_choices``: every option column A-D whose cell is not NA (pandas semantics)."""
    return {c: str(row[c]) for c in "ABCD" if c in row and not is_na(row[c])}


def mmbench_circular(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Circular evaluation: rows grouped by ``index % 1e6``; a group counts only if every row's extracted
    letter equals its ``answer``. ``vanilla`` = plain accuracy on the original rows (index < 1e6);
    ``groups`` = ``{base index: all right}`` (the units of a bootstrap)."""
    groups: dict[int, list[bool]] = {}
    vanilla: list[bool] = []
    for row in rows:
        hit = mmbench_extract(row["prediction"], mmbench_choices(row)) == row["answer"]
        index = int(row["index"])
        groups.setdefault(index % 1_000_000, []).append(hit)
        if index < 1_000_000:
            vanilla.append(hit)
    return {
        "circular": sum(all(g) for g in groups.values()) / len(groups) if groups else 0.0,
        "vanilla": sum(vanilla) / len(vanilla) if vanilla else 0.0,
        "n_groups": len(groups),
        "groups": {k: all(g) for k, g in groups.items()},
    }


# ----------------------------------------------------------------------- GPT-judged: LLaVA-Bench


def llava_bench_parse_score(review: str) -> list[float]:
    """``eval_gpt_review_bench.parse_score``: first line, ``,`` → space, split on single spaces; exactly
    two floats, else ``[-1, -1]`` (which is still averaged in)."""
    try:
        fields = review.split("\n")[0].replace(",", " ").split(" ")
        if len(fields) == 2:
            return [float(fields[0]), float(fields[1])]
    except ValueError:
        pass
    return [-1.0, -1.0]


def llava_bench_summary(reviews: Iterable[tuple[str, Sequence[float]]]) -> dict[str, dict[str, float]]:
    """``summarize_gpt_review.py`` for one judge run: ``(category, [ref, model])`` → per category and
    ``all``: column means rounded to 3 decimals, relative = round(model/ref·100, 1)."""
    by_cat: dict[str, list[Sequence[float]]] = {"all": []}
    for category, pair in reviews:
        by_cat.setdefault(category, []).append(pair)
        by_cat["all"].append(pair)
    out = {}
    for cat, pairs in sorted(by_cat.items()):
        ref = round(sum(p[0] for p in pairs) / len(pairs), 3)
        model = round(sum(p[1] for p in pairs) / len(pairs), 3)
        out[cat] = {
            "relative_score": round(model / ref * 100, 1) if ref else 0.0,
            "gpt4_ref_score_x10": round(ref * 10, 1),
            "model_score_x10": round(model * 10, 1),
        }
    return out


def llava_bench_scores(runs: Sequence[Iterable[tuple[str, Sequence[float]]]]) -> dict[str, Any]:
    """Reported LLaVA-Bench number: mean over judge runs of each run's ``all`` relative score."""
    summaries = [llava_bench_summary(r) for r in runs]
    rel = [s["all"]["relative_score"] for s in summaries]
    return {"relative_score": sum(rel) / len(rel) if rel else 0.0, "runs": summaries}


# ---------------------------------------------------------------------------- GPT-judged: MM-Vet


def mmvet_scores(
    scores: Mapping[str, Sequence[float]], capabilities: Mapping[str, Sequence[str]] | None = None
) -> dict[str, Any]:
    """MM-Vet evaluator: per run total = 100·Σ scores / n samples; reported = mean over runs rounded to 1
    decimal, std = population std of the run totals; per capability likewise when labels are given."""
    if not scores:
        raise ValueError("MM-Vet: no graded samples")
    n_runs = {len(v) for v in scores.values()}
    if len(n_runs) != 1:
        raise ValueError(f"MM-Vet: samples have different numbers of judge runs: {sorted(n_runs)}")
    runs = n_runs.pop()
    totals = [100 * sum(v[j] for v in scores.values()) / len(scores) for j in range(runs)]
    out: dict[str, Any] = {
        "total": round(sum(totals) / runs, 1),
        "std": round(statistics.pstdev(totals), 1),
        "runs": [round(t, 1) for t in totals],
        "n": len(scores),
    }
    if capabilities:
        caps: dict[str, list[str]] = {}
        for sid, cap_list in capabilities.items():
            for cap in cap_list:
                caps.setdefault(cap, []).append(sid)
        per_cap = {}
        for cap, ids in sorted(caps.items()):
            ids = [i for i in ids if i in scores]
            if ids:
                vals = [100 * sum(scores[i][j] for i in ids) / len(ids) for j in range(runs)]
                per_cap[cap] = round(sum(vals) / runs, 1)
        out["capabilities"] = per_cap
    return out
