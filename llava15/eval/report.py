"""Results report in the layout of the paper's Table 2, next to LLaVA-1.5-7B/13B's published numbers.

``write_report(results, out_dir, settings)`` writes ``report.md``, ``report.json`` and ``chart.png``
(matplotlib, Agg backend, imported only here and only when drawing). ``results`` are the per-benchmark
dicts of :mod:`llava15.eval.score` / the runner. ``run_report(args)`` implements
``llava15 eval report SCORES.json... --out DIR``. Benchmarks that were skipped (no judge) or need a
submission server show as such, never as 0. Each score shows its 95 % bootstrap interval. A score
that is not the paper's quantity (``comparable: false``, e.g. SEED without video answers) says what it
is in its cell (``62.3 (img)``) and is left out of the chart's comparison.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# Table 2 of the paper (arXiv v1, shared/paper). LLaVA-W and MM-Vet: the model zoo's numbers (what the
# official judge files reproduce, eval.md §2) are given alongside.
PAPER: dict[str, dict[str, float]] = {
    "7b": {"vqav2": 78.5, "gqa": 62.0, "vizwiz": 50.0, "scienceqa": 66.8, "textvqa": 58.2, "pope": 85.9,
           "mme": 1510.7, "mmbench": 64.3, "mmbench_cn": 58.3, "seed": 58.6, "llava_bench": 63.4, "mmvet": 30.5},
    "13b": {"vqav2": 80.0, "gqa": 63.3, "vizwiz": 53.6, "scienceqa": 71.6, "textvqa": 61.3, "pope": 85.9,
            "mme": 1531.3, "mmbench": 67.7, "mmbench_cn": 63.6, "seed": 61.6, "llava_bench": 70.7, "mmvet": 35.4},
}  # fmt: skip
MODEL_ZOO = {"7b": {"llava_bench": 65.4, "mmvet": 31.1}, "13b": {"llava_bench": 72.5, "mmvet": 36.1}}
COLUMNS = {
    "vqav2": "VQAv2", "gqa": "GQA", "vizwiz": "VizWiz", "scienceqa": "SQA-IMG", "textvqa": "VQA-T",
    "pope": "POPE", "mme": "MME", "mmbench": "MMB", "mmbench_cn": "MMB-CN", "seed": "SEED",
    "llava_bench": "LLaVA-W", "mmvet": "MM-Vet",
}  # fmt: skip
_PACKAGES = ("llava15", "torch", "transformers", "tokenizers", "pillow", "numpy")


def environment() -> dict[str, Any]:
    """Python, platform and package versions, recorded with every score."""
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions}


def comparable(res: dict[str, Any] | None) -> bool:
    """Whether a score is the quantity the paper's cell reports (False: e.g. SEED image-only)."""
    return bool(res) and res.get("value") is not None and res.get("comparable", True) is not False


def _cell(res: dict[str, Any] | None) -> str:
    if res is None:
        return "–"
    if res.get("value") is None:
        return {"skipped": "skipped", "submission": "server"}.get(res.get("status", ""), "–")
    text = f"{res['value']:.1f}"
    if not comparable(res):
        text += f" ({res.get('scope') or 'partial'})"
    return text


def _ci(res: dict[str, Any] | None) -> str:
    ci = (res or {}).get("ci95")
    return f"{ci[0]:.1f}–{ci[1]:.1f}" if ci else ""


def markdown(results: dict[str, dict[str, Any]], settings: dict[str, Any]) -> str:
    names = list(COLUMNS)
    head = "| Model | " + " | ".join(COLUMNS[n] for n in names) + " |"
    rule = "|---|" + "---|" * len(names)
    rows = [head, rule]
    for size in ("7b", "13b"):
        rows.append(
            f"| LLaVA-1.5-{size.upper()} (paper) | " + " | ".join(f"{PAPER[size][n]:g}" for n in names) + " |"
        )
    label = settings.get("model", "this run")
    rows.append(f"| **{label}** | " + " | ".join(_cell(results.get(n)) for n in names) + " |")
    if any(_ci(results.get(n)) for n in names):
        rows.append("| 95% CI (bootstrap) | " + " | ".join(_ci(results.get(n)) for n in names) + " |")
    protocol = settings.get("protocol")
    lines = ["# LLaVA-1.5 evaluation (Table 2 layout)", ""]
    if protocol:
        lines += [f"Protocol: **{protocol}** ({settings.get('decoding', '')}; dtype {settings.get('dtype', '?')}; "
                  f"images: {settings.get('image_order', '')})", ""]
    lines += [*rows, ""]
    lines.append(
        "Paper = arXiv v1 Table 2. The official judge files give LLaVA-W "
        f"{MODEL_ZOO['7b']['llava_bench']}/{MODEL_ZOO['13b']['llava_bench']} and MM-Vet "
        f"{MODEL_ZOO['7b']['mmvet']}/{MODEL_ZOO['13b']['mmvet']} (7B/13B, model zoo). `server` = needs the "
        "submission server (files written); `skipped` = needs a judge. POPE = mean F1 ×100 of 3 splits; "
        "MME = perception score; SQA-IMG = image subset accuracy. A cell with a bracket is not the paper's "
        "quantity (e.g. `(img)`: SEED image questions only) and is not compared with it. 95% CI: percentile "
        "bootstrap over questions (circular groups for MMBench, image pairs for MME, within splits/subtasks)."
    )
    lines += ["", "## Details", ""]
    for name in names:
        res = results.get(name)
        if res is None:
            continue
        ci = f" [95% CI {_ci(res)}]" if _ci(res) else ""
        lines.append(f"- **{COLUMNS[name]}** ({res.get('status')}): {_cell(res)}{ci}")
        if res.get("data"):
            lines.append(f"  - data: {res['data']}")
        for note in res.get("notes", []):
            lines.append(f"  - {note}")
        if res.get("judge"):
            lines.append(f"  - judge: `{json.dumps(res['judge'], default=str)}`")
        for kind, path in res.get("files", {}).items():
            lines.append(f"  - {kind}: `{path}`")
    lines += ["", "## Settings", "", "```json", json.dumps(settings, indent=1, default=str), "```", ""]
    return "\n".join(lines)


def chart(results: dict[str, dict[str, Any]], path: Path) -> Path:
    """Grouped bars: paper 7B, paper 13B, this run (MME divided by 20 to share the 0-100 axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(COLUMNS)
    scale = {n: (1 / 20 if n == "mme" else 1.0) for n in names}
    ours = [(results.get(n) or {}).get("value") if comparable(results.get(n)) else None for n in names]
    fig, ax = plt.subplots(figsize=(13, 4.5))
    width = 0.27
    xs = range(len(names))
    for k, (label, vals) in enumerate(
        [("paper 7B", [PAPER["7b"][n] for n in names]), ("paper 13B", [PAPER["13b"][n] for n in names]),
         ("this run", ours)]
    ):  # fmt: skip
        heights = [0 if v is None else v * scale[n] for v, n in zip(vals, names)]
        ax.bar([x + (k - 1) * width for x in xs], heights, width, label=label)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([COLUMNS[n] + (" (/20)" if n == "mme" else "") for n in names], rotation=30)
    ax.set_ylabel("score")
    ax.legend()
    ax.set_title("LLaVA-1.5 benchmarks (missing bars: server-scored, skipped or not run)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(
    results: dict[str, dict[str, Any]], out_dir: str | Path, settings: dict[str, Any]
) -> dict[str, str]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {**settings, "environment": settings.get("environment") or environment()}
    table = {n: {"ours": (results.get(n) or {}).get("value"), "status": (results.get(n) or {}).get("status"),
                 "ci95": (results.get(n) or {}).get("ci95"), "cell": _cell(results.get(n)),
                 "comparable": comparable(results.get(n)),
                 "paper_7b": PAPER["7b"][n], "paper_13b": PAPER["13b"][n]} for n in COLUMNS}  # fmt: skip
    results = {n: {k: v for k, v in r.items() if k != "bootstrap"} for n, r in results.items()}
    (out / "report.json").write_text(
        json.dumps({"table2": table, "results": results, "settings": settings}, indent=1, default=str),
        encoding="utf-8",
    )
    (out / "report.md").write_text(markdown(results, settings), encoding="utf-8")
    files = {"markdown": str(out / "report.md"), "json": str(out / "report.json")}
    files["chart"] = str(chart(results, out / "chart.png"))
    return files


def run_report(args: argparse.Namespace) -> int:
    results: dict[str, dict[str, Any]] = {}
    settings: dict[str, Any] = {"scores_files": []}
    for path in args.scores:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        # A scores file holds one result (eval score) or {"results": {...}, "settings": {...}} (eval run).
        items = data["results"].values() if "results" in data else [data]
        for res in items:
            results[res["benchmark"]] = res
        settings.update({k: v for k, v in data.get("settings", {}).items() if k not in ("answers",)})
        settings["scores_files"].append(str(path))
    files = write_report(results, args.out, settings)
    print((Path(files["markdown"])).read_text(encoding="utf-8").split("\n## Details")[0])
    for kind, p in files.items():
        print(f"{kind}: {p}")
    return 0
