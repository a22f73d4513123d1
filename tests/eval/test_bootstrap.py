"""95 % bootstrap intervals: a pure function of the units and the seed, covering the true value about
95 % of the time on a synthetic case with a known answer; the interval each benchmark reports; and
``llava15 eval compare`` flagging a real difference between two runs but not a null one."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from llava15.cli import main
from llava15.eval.bootstrap import attach_ci, ci95, paired, point, units
from llava15.eval.metrics import pope_scores


def _bernoulli(p: float, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return units("mean", [[str(i), "", int(x)] for i, x in enumerate(rng.random(n) < p)])


def test_interval_is_deterministic_for_a_seed():
    boot = _bernoulli(0.7, 300, 1)
    assert ci95(boot, 500, seed=3) == ci95(boot, 500, seed=3)
    assert ci95(boot, 500, seed=3) != ci95(boot, 500, seed=4)
    res = attach_ci({"value": point(boot), "bootstrap": boot}, 500, seed=3)
    assert res["ci95"] == [round(x, 4) for x in ci95(boot, 500, seed=3)]
    assert res["ci95"][0] < res["value"] < res["ci95"][1]


def test_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    p, n, reps = 0.3, 400, 300  # accuracy of a model that is right 30 % of the time, on 400 questions
    covered = 0
    for r in range(reps):
        lo, hi = ci95(_bernoulli(p, n, seed=100 + r), 400, seed=r)
        covered += lo <= 100 * p <= hi
    assert 0.91 <= covered / reps <= 0.98, covered / reps


def test_stratified_pope_interval_contains_the_score_and_resamples_within_splits():
    rng = random.Random(0)
    rows, texts, labels = [], {}, {}
    for split in ("adversarial", "popular", "random"):
        for i in range(200):
            label = "yes" if i % 2 else "no"
            pred = label if rng.random() < 0.8 else ("no" if label == "yes" else "yes")
            texts.setdefault(split, []).append(pred.capitalize())
            labels.setdefault(split, []).append(label)
            rows.append([f"{split}{i}", split, int(pred == "yes"), int(label == "yes")])
    boot = units("pope", rows)
    value = 100 * np.mean([pope_scores(texts[s], labels[s])["f1"] for s in texts])
    assert point(boot) == pytest.approx(value)
    assert point(boot, category="random") == pytest.approx(100 * pope_scores(texts["random"], labels["random"])["f1"])
    lo, hi = ci95(boot, 400)
    assert lo < value < hi and hi - lo < 10


def test_paired_difference_of_identical_runs_is_zero():
    boot = _bernoulli(0.5, 200, 0)
    d = paired(boot, boot, 300)
    assert d["delta"] == 0 and d["ci95"] == [0.0, 0.0] and not d["significant"]


def _pope_run(tmp_path: Path, name: str, accuracy: float, seed: int) -> Path:
    """A run folder as `eval run` writes it: <run>/pope/scores.json from scoring answers of the given
    accuracy on a 3 x 300-question POPE layout."""
    from llava15.eval.benchmarks import get_benchmark

    root = tmp_path / "data"
    d = root / "pope"
    if not d.exists():
        (d / "coco").mkdir(parents=True)
        qs = []
        for s, split in enumerate(("adversarial", "popular", "random")):
            labels = ["yes" if (i * 7 + s) % 2 else "no" for i in range(300)]
            (d / "coco" / f"coco_pope_{split}.json").write_text(
                "".join(json.dumps({"question_id": i, "label": lab}) + "\n" for i, lab in enumerate(labels)))
            qs += [{"question_id": 1000 * s + i, "image": "x.jpg", "text": "q", "category": split, "label": lab}
                   for i, lab in enumerate(labels)]  # fmt: skip
        (d / "llava_pope_test.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs))
    rng = random.Random(seed)
    questions = [json.loads(x) for x in (d / "llava_pope_test.jsonl").read_text().splitlines()]
    answers = [{"question_id": q["question_id"], "text": (q["label"] if rng.random() < accuracy
                else {"yes": "no", "no": "yes"}[q["label"]]).capitalize()} for q in questions]  # fmt: skip
    res = attach_ci(get_benchmark("pope").score(answers, root, None), 200)
    out = tmp_path / name / "pope" / "scores.json"
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps(res))
    return tmp_path / name


def test_compare_flags_a_real_difference_and_not_a_null_one(tmp_path, capsys):
    a = _pope_run(tmp_path, "a", 0.75, seed=1)
    better = _pope_run(tmp_path, "better", 0.85, seed=2)
    same = _pope_run(tmp_path, "same", 0.75, seed=3)  # another run of an equally good model

    def table(x: Path, y: Path) -> dict[str, str]:
        assert main(["eval", "compare", str(x), str(y), "--bootstrap", "500", "--out", str(tmp_path / "c.json")]) == 0
        lines = capsys.readouterr().out.splitlines()
        return {line.split()[1]: line for line in lines if line.startswith("pope ")}

    rows = table(a, better)
    assert rows["(all)"].rstrip().endswith("*") and all(rows[s].rstrip().endswith("*") for s in
                                                        ("adversarial", "popular", "random"))  # fmt: skip
    saved = json.loads((tmp_path / "c.json").read_text())["rows"][0]
    assert saved["significant"] and saved["delta"] > 5 and saved["ci95"][0] > 0 and saved["n"] == 900
    rows = table(a, same)
    assert not rows["(all)"].rstrip().endswith("*")
    saved = json.loads((tmp_path / "c.json").read_text())["rows"][0]
    assert saved["ci95"][0] < 0 < saved["ci95"][1]
