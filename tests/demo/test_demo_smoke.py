"""`llava15 demo --smoke`: the whole path (synthesis → stage 1 → stage 2 → eval → chat → results.json)
runs as a real process and writes every artifact the issue names. Quality is measured by the full demo
(figures in benchmarks/RESULTS.md), not here."""

import json
import subprocess
import sys
from pathlib import Path


def test_demo_smoke_writes_results_and_artifacts(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "llava15.cli", "demo", "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    for key in ("vqa_accuracy", "pope_f1", "format_compliance"):
        assert results[key] is not None and 0.0 <= results[key] <= 1.0, (key, results[key])
    assert results["seconds"] > 0
    assert (Path(results["checkpoint"]) / "llava15.json").exists()
    assert (Path(results["eval_data"]) / "pope").is_dir()
    assert Path(results["report"]).exists() and Path(results["chart"]).exists()
    assert set(results["example_chat"]) >= {"with_format_prompt", "without_format_prompt"}
    assert "VQA-like accuracy" in proc.stdout

    fresh = tmp_path / "fresh"
    proc = subprocess.run([sys.executable, "-m", "llava15.cli", "demo", "--eval-only", "--smoke", "--checkpoint",
                           results["checkpoint"], "--seed", "7", "--out", str(fresh)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    again = json.loads((fresh / "results.json").read_text())
    assert again["eval_data"] != results["eval_data"]
    assert 0.0 <= again["vqa_accuracy"] <= 1.0
