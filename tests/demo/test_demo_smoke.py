"""`llava15 demo --smoke` from an installed wheel: the whole path (synthesis → stage 1 → stage 2 → eval →
chat → results.json) runs as a real process, from a folder outside the checkout, with llava15 installed
as users get it (`pip wheel .`, then a non-editable install into a fresh virtual environment; the
dependencies come from the project's environment). Quality is measured by the full demo (figures in
benchmarks/RESULTS.md), not here."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`bin/` of a fresh virtual environment holding the llava15 wheel built from this checkout."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(root / "dist"), str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next((root / "dist").glob("llava15-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    purelib = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    # the project's environment provides the dependencies (torch, transformers, ...), not llava15 itself:
    # its editable finder sits in a .pth file of that site dir, which a path line here does not run
    (purelib / "project_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return venv / "bin"


def _run(bin_dir: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(bin_dir / "llava15"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_the_wheel_is_what_runs(installed: Path, tmp_path: Path) -> None:
    proc = subprocess.run([str(installed / "python"), "-c", "import llava15; print(llava15.__file__)"],
                          cwd=tmp_path, capture_output=True, text=True, check=True,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert str(installed.parent) in proc.stdout and str(REPO) not in proc.stdout, proc.stdout


def test_demo_smoke_from_the_wheel_writes_results_and_artifacts(installed: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = _run(installed, ["demo", "--smoke", "--out", str(out)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    for key in ("vqa_accuracy", "pope_f1", "format_compliance", "pope_yes_ratio", "blind_vqa_accuracy"):
        assert results[key] is not None and 0.0 <= results[key] <= 1.0, (key, results[key])
    assert results["seconds"] > 0
    assert (Path(results["checkpoint"]) / "llava15.json").exists()
    assert (Path(results["eval_data"]) / "pope").is_dir()
    assert Path(results["report"]).exists() and Path(results["chart"]).exists()
    assert results["per_kind"] and all(set(v) == {"accuracy", "blind_accuracy"} for v in results["per_kind"].values())
    chats = [c for c in (results["example_chat"].get("right"), results["example_chat"].get("wrong")) if c]
    assert chats and all({"question", "expected", "with_format_prompt", "without_format_prompt"} <= set(c) for c in chats)
    assert "VQA-like accuracy" in proc.stdout
    from llava15.demo.common import OUTPUTS

    # --overwrite clears what a run wrote: a folder it does not clear would be resumed by the next run
    assert {p.name for p in out.iterdir()} <= set(OUTPUTS), sorted(p.name for p in out.iterdir())

    fresh = tmp_path / "fresh"
    proc = _run(installed, ["demo", "--eval-only", "--smoke", "--checkpoint", results["checkpoint"], "--seed", "7",
                            "--out", str(fresh)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    again = json.loads((fresh / "results.json").read_text())
    assert again["eval_data"] != results["eval_data"]
    assert 0.0 <= again["vqa_accuracy"] <= 1.0
