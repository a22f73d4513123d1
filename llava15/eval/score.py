"""``llava15 eval score``: score an answers file produced by anything (our runner, the original
``model_vqa*.py`` scripts, vLLM, ...) against the official files under ``--data-root``.

Accepted answer files:

* JSONL (or a JSON list) of records with ``question_id`` and ``text`` (the original answer format;
  ``prompt`` is used where the official scorer uses it: MME, TextVQA, ScienceQA's IMG subset);
* LLaVA-Bench review files (records with ``tuple``); several, comma-separated, are several judge runs;
* an MM-Vet grade file (``{id: {"score": [...]}}``) or results file (``{"v1_<id>": text}``).

``run_score(args)`` prints the score line and writes ``<benchmark>_scores.json`` (or ``--out FILE.json``)
with the metrics, the 95 % bootstrap interval ``ci95`` and its units, the files written (submissions),
which data the ground truth came from, and the settings and package versions. ``--question-file``
scores against another question file than the official one (e.g. an MMBench test TSV).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from llava15.eval.benchmarks import get_benchmark
from llava15.eval.benchmarks.base import read_jsonl, validate_answers, write_json
from llava15.eval.bootstrap import DEFAULT_SAMPLES, attach_ci

JUDGE_RUNS = 3
"""The released LLaVA-Bench / MM-Vet numbers average 3 judge runs."""


def read_answers(path: str | Path) -> list[dict[str, Any]]:
    """Answer records from one file in any of the accepted formats (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"answers file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return read_jsonl(path)  # several lines: the original JSONL answer format
    if isinstance(data, dict) and "question_id" in data:
        return [data]  # a one-line JSONL file
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        values = list(data.values())
        if values and all(isinstance(v, dict) and "score" in v for v in values):
            return [{"question_id": k, "score": v["score"]} for k, v in data.items()]
        if values and all(isinstance(v, str) for v in values):
            # MM-Vet results file: {"v1_<question_id>": text}
            return [{"question_id": _mmvet_qid(k), "text": v} for k, v in data.items()]
    raise ValueError(f"{path}: not an answers file (JSONL records, review records, MM-Vet grades or results)")


def _mmvet_qid(key: str) -> Any:
    tail = key[3:] if key.startswith("v1_") else key
    return int(tail) if tail.isdigit() else key


def parse_question_files(values: str | list[str] | None, names: list[str]) -> dict[str, str]:
    """``--question-file`` values: ``BENCH=PATH`` (repeatable), or a bare ``PATH`` for a single benchmark."""
    items = [values] if isinstance(values, str) else list(values or [])
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if sep and name in names:
            out[name] = path
        elif not sep and len(names) == 1:
            out[names[0]] = item
        else:
            raise ValueError(f"--question-file {item!r}: expected BENCH=PATH with BENCH one of {', '.join(names)}")
    return out


def split_paths(answers: str | list[str]) -> list[str]:
    items = answers if isinstance(answers, list) else [answers]
    return [p for item in items for p in str(item).split(",") if p]


def make_judge(args: argparse.Namespace, out_dir: Path | None) -> Any:
    """A :class:`~llava15.eval.judge.Judge` when ``--judge-url`` and ``--judge-model`` are both given."""
    url, model = getattr(args, "judge_url", None), getattr(args, "judge_model", None)
    if not url and not model:
        return None
    if not (url and model):
        raise ValueError("a judge needs both --judge-url and --judge-model")
    from llava15.eval.judge import Judge

    cache = (
        getattr(args, "judge_cache", None) or (out_dir or Path.home() / ".cache" / "llava15") / "judge_cache"
    )
    return Judge(url, model, cache, runs=int(getattr(args, "judge_runs", JUDGE_RUNS) or JUDGE_RUNS))


def score_answers(
    benchmark: str, answer_paths: list[str], data_root: str | Path, out_dir: Path | None, judge: Any = None,
    question_file: str | Path | None = None, ci_samples: int = DEFAULT_SAMPLES, seed: int = 0,
) -> dict[str, Any]:
    """Read the answer files, score them, add the interval and settings. Several files = judge runs."""
    bench = get_benchmark(benchmark)
    answers: list[dict[str, Any]] = []
    for run, path in enumerate(answer_paths):
        records = read_answers(path)
        validate_answers(records, benchmark, str(path))
        for rec in records:
            if "tuple" in rec:
                rec = {**rec, "_run": run}
            answers.append(rec)
    res = attach_ci(bench.score(answers, bench.locate(data_root, question_file), out_dir, judge), ci_samples, seed)
    from llava15.eval.report import environment

    res["settings"] = {"answers": [str(Path(p).resolve()) for p in answer_paths],
                       "data_root": str(data_root) if str(data_root) == "hf" else str(Path(data_root).resolve()),
                       "n_answers": len(answers)}  # fmt: skip
    res["environment"] = environment()
    return res


def format_result(res: dict[str, Any]) -> str:
    value = "—" if res["value"] is None else f"{res['value']:.2f}"
    if res.get("ci95"):
        value += f" [95% CI {res['ci95'][0]:.2f}, {res['ci95'][1]:.2f}]"
    line = f"{res['benchmark']}: {value} ({res['status']})"
    for note in res.get("notes", []):
        line += f"\n  note: {note}"
    for kind, path in res.get("files", {}).items():
        line += f"\n  {kind}: {path}"
    return line


def run_score(args: argparse.Namespace) -> int:
    out = Path(args.out) if getattr(args, "out", None) else None
    out_file = None
    out_dir = None
    if out is not None:
        out_file = out if out.suffix == ".json" else out / f"{args.benchmark}_scores.json"
        out_dir = out_file.parent
    try:
        qfile = parse_question_files(getattr(args, "question_file", None), [args.benchmark]).get(args.benchmark)
        res = score_answers(args.benchmark, split_paths(args.answers), args.data_root, out_dir,
                            make_judge(args, out_dir), qfile, getattr(args, "bootstrap", DEFAULT_SAMPLES),
                            getattr(args, "seed", 0))  # fmt: skip
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_result(res))
    print(json.dumps(_headline(res), indent=1, default=str))
    if out_file is not None:
        write_json(out_file, res, indent=1)
        print(f"scores written to {out_file}")
    return 0


def _headline(res: dict[str, Any]) -> dict[str, Any]:
    """The top-level numeric metrics (per-item detail stays in the JSON file)."""
    out = {k: v for k, v in res["metrics"].items() if isinstance(v, int | float)}
    if res.get("ci95"):
        out["ci95"] = res["ci95"]
    return out
