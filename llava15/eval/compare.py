"""``llava15 eval compare RUN_A RUN_B``: per-benchmark and per-category differences with paired-bootstrap
intervals, marking the ones whose 95 % interval excludes 0.

A run is an ``eval run`` output folder (``<run>/<bench>/scores.json``) or one scores file written by
``eval score`` / ``eval run``; the units to resample come from each score's ``bootstrap`` entry and are
matched by key (question id, circular group, image pair), so a difference is measured on the questions
both runs answered (the count of unmatched units is printed). Differences are ``B - A`` in the
benchmark's units (MME points, percent elsewhere). ``--out FILE.json`` also writes the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from llava15.eval.bootstrap import DEFAULT_SAMPLES, categories, paired


def load_run(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{benchmark: result}`` of every score in a run folder or scores file that carries its units."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*/scores.json")) + sorted(path.glob("*_scores.json"))
    elif path.exists():
        files = [path]
    else:
        raise FileNotFoundError(f"{path}: no such run folder or scores file")
    out: dict[str, dict[str, Any]] = {}
    for f in files:
        data = json.loads(f.read_text(encoding="utf-8"))
        for res in data["results"].values() if "results" in data else [data]:
            if res.get("bootstrap", {}).get("units"):
                out[res["benchmark"]] = res
    if not out:
        raise ValueError(f"{path}: no score with bootstrap units (expected <run>/<bench>/scores.json from "
                         "`llava15 eval run` or a file from `llava15 eval score`)")
    return out


def compare_runs(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], samples: int = DEFAULT_SAMPLES,
                 seed: int = 0) -> list[dict[str, Any]]:  # fmt: skip
    """One row per benchmark (category ``None``) followed by its categories, for benchmarks in both runs."""
    rows = []
    for name in [n for n in a if n in b]:
        ba, bb = a[name]["bootstrap"], b[name]["bootstrap"]
        rows.append({"benchmark": name, "category": None, **paired(ba, bb, samples, seed)})
        for cat in sorted(set(categories(ba)) | set(categories(bb))):
            rows.append({"benchmark": name, "category": cat, **paired(ba, bb, samples, seed, category=cat)})
    return rows


def _fmt(x: float | None, sign: bool = False) -> str:
    if x is None:
        return "—"
    return f"{x:+.2f}" if sign else f"{x:.2f}"


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'benchmark':<12} {'category':<28} {'A':>8} {'B':>8} {'B-A':>8}  {'95% CI':<18} {'n':>6}  sig"]
    for r in rows:
        ci = f"[{_fmt(r['ci95'][0], True)}, {_fmt(r['ci95'][1], True)}]" if r["ci95"] else "—"
        cat = "(all)" if r["category"] is None else str(r["category"])[:28]
        extra = f"  (unmatched: {r['only_a']} only in A, {r['only_b']} only in B)" if r["only_a"] or r["only_b"] else ""
        lines.append(f"{r['benchmark']:<12} {cat:<28} {_fmt(r['a']):>8} {_fmt(r['b']):>8} {_fmt(r['delta'], True):>8}  "
                     f"{ci:<18} {r['n']:>6}  {'*' if r['significant'] else ''}{extra}")  # fmt: skip
    lines.append("* = the paired-bootstrap 95% interval of B-A excludes 0")
    return "\n".join(lines)


def run_compare(args: argparse.Namespace) -> int:
    try:
        a, b = load_run(args.run_a), load_run(args.run_b)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    common = [n for n in a if n in b]
    if not common:
        print(f"error: {args.run_a} and {args.run_b} share no scored benchmark", file=sys.stderr)
        return 2
    for name in common:
        for key in ("protocol", "data"):
            if a[name].get(key) != b[name].get(key):
                print(f"note: {name}: {key} differs (A: {a[name].get(key)}; B: {b[name].get(key)})")
    samples, seed = int(getattr(args, "bootstrap", DEFAULT_SAMPLES)), int(getattr(args, "seed", 0))
    rows = compare_runs(a, b, samples, seed)
    print(format_table(rows))
    if getattr(args, "out", None):
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"a": str(args.run_a), "b": str(args.run_b), "samples": samples,
                                              "seed": seed, "rows": rows}, indent=1), encoding="utf-8")  # fmt: skip
        print(f"written: {args.out}")
    return 0
