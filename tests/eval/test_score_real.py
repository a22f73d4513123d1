"""`llava15 eval score` on the official LLaVA-1.5 answers and judge outputs reproduces the published
scores. The data roots (official layout) and answer files are built in tmp from ../shared fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llava15.cli import main


def load_fixture(fixtures: Path, rel: str):
    return json.loads((fixtures / rel).read_text(encoding="utf-8"))


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


EVAL = ("playground", "data", "eval")
QFILES = "benchmarks/llava_v1_5_eval"


def _score(tmp_path: Path, bench: str, answers: str, capsys) -> dict:
    out = tmp_path / "out"
    assert main(["eval", "score", "--benchmark", bench, "--answers", answers,
                 "--data-root", str(tmp_path / "root"), "--out", str(out)]) == 0  # fmt: skip
    assert bench in capsys.readouterr().out
    return json.loads((out / f"{bench}_scores.json").read_text())


def _interval(res: dict, exact: bool = True) -> list[float]:
    """The reported 95 % interval holds the score; its units give back the score itself (``exact``)."""
    from llava15.eval.bootstrap import point

    lo, hi = res["ci95"]
    assert lo < res["value"] < hi and res["ci_settings"]["samples"] == 1000
    if exact:
        assert point(res["bootstrap"]) == pytest.approx(res["value"])
    return [lo, hi]


def _root(tmp_path: Path, folder: str) -> Path:
    d = tmp_path.joinpath("root", *EVAL, folder)
    d.mkdir(parents=True)
    return d


def test_pope_mean_f1(tmp_path, fixtures, capsys):
    d = _root(tmp_path, "pope")
    (d / "llava_pope_test.jsonl").symlink_to(fixtures / QFILES / "llava_pope_test.jsonl")
    (d / "coco").mkdir()
    for split in ("adversarial", "popular", "random"):
        (d / "coco" / f"coco_pope_{split}.json").symlink_to(
            fixtures / f"benchmarks/pope_coco_e3e3926/coco_pope_{split}.json"
        )
    real = load_fixture(fixtures, "real/pope_llava_v1_5_13b.json")
    texts = {qid: ans for items in real["items"].values() for qid, _label, ans in items}
    questions = [json.loads(line) for line in open(d / "llava_pope_test.jsonl")]
    answers = [{"question_id": q["question_id"], "prompt": q["text"], "text": texts[q["question_id"]],
                "answer_id": "x", "model_id": "llava-v1.5-13b", "metadata": {}} for q in questions]  # fmt: skip
    res = _score(tmp_path, "pope", str(write_jsonl(tmp_path / "answers.jsonl", answers)), capsys)
    assert res["status"] == "scored"
    assert res["metrics"]["mean_f1"] == pytest.approx(0.85947, abs=5e-6)
    assert round(res["value"], 1) == 85.9
    lo, hi = _interval(res)
    assert 84.5 < lo and hi < 87.5  # 8,910 questions: about ±0.7
    for split, expected in real["per_category"].items():
        got = res["metrics"]["splits"][split]
        assert {k: got[k] for k in ("TP", "FP", "TN", "FN")} == {
            k: expected[k] for k in ("TP", "FP", "TN", "FN")
        }


def test_mme_perception_and_cognition(tmp_path, fixtures, capsys):
    d = _root(tmp_path, "MME")
    (d / "llava_mme.jsonl").symlink_to(fixtures / QFILES / "llava_mme.jsonl")
    real = load_fixture(fixtures, "real/mme_llava_v1_5_13b.json")
    questions = [json.loads(line) for line in open(d / "llava_mme.jsonl")]
    bench = d / "MME_Benchmark_release_version"
    qa: dict[Path, list[str]] = {}
    for cat, items in real["items"].items():
        nested = any("/images/" in q["image"] for q in questions if q["category"] == cat)
        qa_dir = bench / cat / ("questions_answers_YN" if nested else "")
        if nested:
            (bench / cat / "images").mkdir(parents=True, exist_ok=True)
        for file, question, gt, _pred in items:
            qa.setdefault(qa_dir / file, []).append(f"{question}\t{gt}\n")
    for path, lines in qa.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(dict.fromkeys(lines)))
    preds = {cat: iter(items) for cat, items in real["items"].items()}
    answers = [{"question_id": q["question_id"], "prompt": q["text"], "text": next(preds[q["category"]])[3]}
               for q in questions]  # fmt: skip
    res = _score(tmp_path, "mme", str(write_jsonl(tmp_path / "answers.jsonl", answers)), capsys)
    assert res["metrics"]["perception"] == pytest.approx(1531.32, abs=0.005)
    assert res["metrics"]["cognition"] == pytest.approx(295.36, abs=0.005)
    for name, score in real["per_subtask_score"].items():
        assert res["metrics"]["subtasks"][name]["score"] == pytest.approx(score)
    assert (tmp_path / "out" / "mme_eval_tool_results" / "artwork.txt").exists()
    assert res["ci_settings"]["units"] == 1187 and res["ci_settings"]["stratified"]  # image pairs
    _interval(res)


def test_scienceqa_img_and_overall(tmp_path, fixtures, capsys):
    d = _root(tmp_path, "scienceqa")
    (d / "llava_test_CQM-A.json").symlink_to(fixtures / QFILES / "llava_test_CQM-A.json")
    real = load_fixture(fixtures, "real/scienceqa_llava_v1_5_13b.json")
    answers = [{"question_id": qid, "prompt": ("<image>\n" if mm else "") + "question", "text": pred}
               for qid, pred, _gt, _n, mm, _ok in real["items"]]  # fmt: skip
    res = _score(tmp_path, "scienceqa", str(write_jsonl(tmp_path / "answers.jsonl", answers)), capsys)
    m = res["metrics"]
    assert (m["total"], m["correct"], m["img_total"], m["img_correct"]) == (4241, 3155, 2017, 1445)
    assert round(m["accuracy"], 2) == 74.39 and round(res["value"], 1) == 71.6
    assert res["ci_settings"]["units"] == 2017
    _interval(res)


def test_mmbench_circular(tmp_path, fixtures, capsys):
    d = _root(tmp_path, "mmbench")
    real = load_fixture(fixtures, "real/mmbench_circular_llava_v1_5_13b.json")
    cols = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "source", "l2-category",
            "comment", "split", "image"]  # fmt: skip
    lines = ["\t".join(cols)]
    for index, n, answer, _pred in real["items"]:
        opts = [f"option {c}" if i < n else "" for i, c in enumerate("ABCD")]
        lines.append("\t".join([str(index), "What?", "", *opts, answer, "cat", "src", "l2", "", "dev", ""]))
    (d / "mmbench_dev_20230712.tsv").write_text("\n".join(lines) + "\n")
    answers = [{"question_id": index, "round_id": 0, "prompt": "What?", "text": pred}
               for index, _n, _a, pred in real["items"]]  # fmt: skip
    res = _score(tmp_path, "mmbench", str(write_jsonl(tmp_path / "answers.jsonl", answers)), capsys)
    assert res["metrics"]["circular"] == pytest.approx(real["circular_accuracy"])
    assert res["metrics"]["vanilla"] == pytest.approx(real["vanilla_accuracy_main_rows"])
    assert round(res["value"], 1) == 67.7
    assert Path(res["files"]["submission"]).exists()
    assert res["ci_settings"]["units"] == 1176  # circular groups
    _interval(res)


@pytest.mark.parametrize(("model", "expected"), [("7b", 65.4), ("13b", 72.5)])
def test_llava_bench_from_official_reviews(tmp_path, fixtures, capsys, model, expected):
    real = load_fixture(fixtures, "real/llavabench_judged.json")
    paths = []
    for k in (1, 2, 3):
        items = real["runs"][f"llava-v1.5-{model}-eval{k}"]["items"]
        rows = [{"id": i + 1, "question_id": qid, "category": cat, "content": "", "tuple": [ref, ours]}
                for i, (qid, cat, ref, ours) in enumerate(items)]  # fmt: skip
        paths.append(str(write_jsonl(tmp_path / f"llava-v1.5-{model}-eval{k}.jsonl", rows)))
    (tmp_path / "root").mkdir()
    res = _score(tmp_path, "llava_bench", ",".join(paths), capsys)
    assert res["value"] == pytest.approx(real["mean_of_3_runs_all_relative"][model], abs=0.005)
    assert round(res["value"], 1) == expected
    for k, run in enumerate(res["metrics"]["runs"], 1):
        assert run == real["runs"][f"llava-v1.5-{model}-eval{k}"]["official_summary"]
    _interval(res, exact=False)  # the official score rounds each run's means; the units do not


@pytest.mark.parametrize(("run", "expected"), [("7b_3runs", 31.1), ("13b_1runs", 36.1), ("13b_3runs", 36.3)])
def test_mmvet_from_official_grades(tmp_path, fixtures, capsys, run, expected):
    real = load_fixture(fixtures, "real/mmvet_judged.json")["runs"][run]
    grades = {sid: {"model": ["gpt-4"] * len(s), "content": [str(x) for x in s], "score": s}
              for sid, s in zip(real["sample_ids"], real["scores"])}  # fmt: skip
    path = tmp_path / "grade.json"
    path.write_text(json.dumps(grades))
    (tmp_path / "root").mkdir()
    res = _score(tmp_path, "mmvet", str(path), capsys)
    assert res["value"] == expected and res["metrics"]["std"] == real["total_std"]
    _interval(res, exact=False)  # the official total is rounded to 1 decimal
