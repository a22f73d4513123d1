"""Bootstrap confidence intervals for benchmark scores, and paired differences between two runs.

Contract:
- A benchmark's ``score`` puts ``bootstrap = units(kind, rows)`` in its result: the units the score is
  made of, each ``[key, category, *values]``, and how the score is computed from them:

  * ``mean``: ``[key, category, x]``, score = 100·mean(x) (accuracy over questions; MMBench circular:
    one unit per circular group; MM-Vet: the judge score averaged over runs);
  * ``ratio``: ``[key, category, model, reference]``, score = 100·Σmodel/Σreference (LLaVA-Bench);
  * ``pope``: ``[key, split, predicted_yes, label_yes]``, score = 100·mean over splits of F1;
  * ``mme``: ``[image, subtask, correct answers of the pair (0-2)]``, score = Σ over the value's
    subtasks (``value_categories``: perception) of 100·acc + 100·acc+.

- ``ci95(boot, samples, seed)``: percentile interval of the score over ``samples`` resamples of the units
  with replacement (within each split/subtask for ``pope``/``mme``, whose score is per stratum; over
  all units otherwise). numpy's ``default_rng(seed)`` makes it a pure function of its inputs.
- ``paired(a, b, samples, seed)``: the difference ``score(b) - score(a)`` on the units both runs share
  (matched by key), with the same resampled indices applied to both runs; ``significant`` when the 95 %
  interval excludes 0. ``category=`` restricts both to one category (a POPE split, an MME subtask, an
  MMBench category, a SEED question type...).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

KINDS = ("mean", "ratio", "pope", "mme")
STRATIFIED = ("pope", "mme")
DEFAULT_SAMPLES = 1000
_CHUNK = 4_000_000  # indices drawn at a time (memory stays ~32 MB for 100k-question benchmarks)


def units(kind: str, rows: Sequence[Sequence[Any]], value_categories: Sequence[str] | None = None) -> dict:
    if kind not in KINDS:
        raise ValueError(f"unknown bootstrap kind {kind!r}; known: {', '.join(KINDS)}")
    out: dict[str, Any] = {"kind": kind, "units": [list(r) for r in rows]}
    if value_categories is not None:
        out["value_categories"] = list(value_categories)
    return out


def _strata(boot: dict, keys: Sequence[str] | None = None, category: str | None = None
            ) -> dict[str, np.ndarray]:  # fmt: skip
    """Per stratum, the unit values as a float array [n, v] in key order (``keys`` picks and orders)."""
    rows = boot["units"]
    if category is not None:
        rows = [r for r in rows if str(r[1]) == category]
    if keys is not None:
        by_key = {str(r[0]): r for r in rows}
        rows = [by_key[k] for k in keys if k in by_key]
    out: dict[str, list] = {}
    for r in rows:
        stratum = str(r[1]) if boot["kind"] in STRATIFIED else ""
        out.setdefault(stratum, []).append([float(v) for v in r[2:]])
    return {s: np.asarray(v, dtype=np.float64) for s, v in sorted(out.items())}


def _stat(boot: dict, strata: dict[str, np.ndarray], idx: dict[str, np.ndarray], category: str | None) -> np.ndarray:
    kind = boot["kind"]
    if kind == "mean":
        x = strata[""][idx[""], 0]
        return 100.0 * x.mean(axis=1)
    if kind == "ratio":
        v = strata[""][idx[""]]
        ref = v[..., 1].sum(axis=1)
        return np.divide(100.0 * v[..., 0].sum(axis=1), ref, out=np.zeros_like(ref), where=ref != 0)
    per = []
    for s, arr in strata.items():
        v = arr[idx[s]]
        if kind == "pope":
            p, lab = v[..., 0] > 0.5, v[..., 1] > 0.5
            tp = (p & lab).sum(axis=1).astype(float)
            fp = (p & ~lab).sum(axis=1)
            fn = (~p & lab).sum(axis=1)
            prec = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
            rec = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
            per.append(np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=(prec + rec) > 0))
        else:  # mme: a subtask scores 100·acc + 100·acc+ over its image pairs
            if category is None and s not in boot.get("value_categories", [s]):
                continue
            c = v[..., 0]
            per.append(100.0 * c.sum(axis=1) / (2 * c.shape[1]) + 100.0 * (c == 2).mean(axis=1))
    if not per:
        return np.zeros(next(iter(idx.values())).shape[0])
    stacked = np.stack(per)
    return 100.0 * stacked.mean(axis=0) if kind == "pope" else stacked.sum(axis=0)


def _draws(sizes: dict[str, int], samples: int, seed: int) -> Iterator[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK // max(1, sum(sizes.values())))
    done = 0
    while done < samples:
        b = min(per_chunk, samples - done)
        yield {s: rng.integers(0, n, size=(b, n)) for s, n in sizes.items()}
        done += b


def point(boot: dict, category: str | None = None) -> float | None:
    strata = _strata(boot, category=category)
    if not strata or any(len(a) == 0 for a in strata.values()):
        return None
    idx = {s: np.arange(len(a))[None] for s, a in strata.items()}
    return float(_stat(boot, strata, idx, category)[0])


def ci95(boot: dict, samples: int = DEFAULT_SAMPLES, seed: int = 0,
         category: str | None = None) -> list[float] | None:  # fmt: skip
    """The 95 % percentile bootstrap interval ``[lo, hi]`` of the score (None without units)."""
    strata = _strata(boot, category=category)
    if not strata or samples <= 0:
        return None
    stats = np.concatenate([_stat(boot, strata, idx, category)
                            for idx in _draws({s: len(a) for s, a in strata.items()}, samples, seed)])
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return [float(lo), float(hi)]


def paired(a: dict, b: dict, samples: int = DEFAULT_SAMPLES, seed: int = 0,
           category: str | None = None) -> dict[str, Any]:  # fmt: skip
    """``score(b) - score(a)`` on the shared units, its paired-bootstrap 95 % interval and significance."""
    if a["kind"] != b["kind"]:
        raise ValueError(f"cannot pair a {a['kind']!r} score with a {b['kind']!r} score")
    keys_a = {str(r[0]) for r in a["units"] if category is None or str(r[1]) == category}
    keys_b = {str(r[0]) for r in b["units"] if category is None or str(r[1]) == category}
    keys = sorted(keys_a & keys_b)
    out: dict[str, Any] = {"n": len(keys), "only_a": len(keys_a - keys_b), "only_b": len(keys_b - keys_a)}
    if not keys:
        return {**out, "a": None, "b": None, "delta": None, "ci95": None, "significant": False}
    sa, sb = _strata(a, keys, category), _strata(b, keys, category)
    ident = {s: np.arange(len(v))[None] for s, v in sa.items()}
    va, vb = float(_stat(a, sa, ident, category)[0]), float(_stat(b, sb, ident, category)[0])
    deltas = np.concatenate([_stat(b, sb, idx, category) - _stat(a, sa, idx, category)
                             for idx in _draws({s: len(v) for s, v in sa.items()}, samples, seed)])
    lo, hi = (float(x) for x in np.percentile(deltas, [2.5, 97.5]))
    return {**out, "a": va, "b": vb, "delta": vb - va, "ci95": [lo, hi], "significant": lo > 0 or hi < 0}


def categories(boot: dict) -> list[str]:
    return sorted({str(r[1]) for r in boot["units"] if str(r[1])})


def attach_ci(res: dict[str, Any], samples: int = DEFAULT_SAMPLES, seed: int = 0) -> dict[str, Any]:
    """Set ``res["ci95"]`` from its ``bootstrap`` units (None when the score has none, e.g. server-scored)."""
    boot = res.get("bootstrap")
    res["ci95"] = None
    if res.get("value") is not None and boot and boot.get("units"):
        ci = ci95(boot, samples, seed)
        res["ci95"] = None if ci is None else [round(ci[0], 4), round(ci[1], 4)]
        res["ci_settings"] = {"method": "percentile bootstrap", "samples": samples, "seed": seed,
                              "units": len(boot["units"]), "unit": boot.get("unit", "question"),
                              "stratified": boot["kind"] in STRATIFIED}  # fmt: skip
    return res
