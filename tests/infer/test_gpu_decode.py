"""The GPU decode benchmark's code path, run as its CPU dry run (the real run needs CUDA)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_decode.py"


def test_gpu_decode_tiny_dry_run_reports_rate_and_limit(capsys):
    spec = importlib.util.spec_from_file_location("gpu_decode", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--tiny", "--new-tokens", "3", "--reps", "1"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("decode tok/s (batch 1): ") and "bandwidth limit" in last, last


def test_gpu_decode_tiny_dry_run_adds_quantized_rows(capsys):
    spec = importlib.util.spec_from_file_location("gpu_decode", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--tiny", "--new-tokens", "3", "--reps", "1", "--quantize", "int8,fp8"]) == 0
    out = capsys.readouterr().out
    for method in ("int8", "fp8"):
        assert f"{method}: quantized" in out and "% of it" in out, out
