"""The GPU decode benchmark's code path, run as its CPU dry run (the real run needs CUDA)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_decode.py"


def test_gpu_decode_tiny_dry_run_reports_rate_and_limit():
    run = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--new-tokens", "4", "--reps", "1"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("decode tok/s (batch 1): ") and "bandwidth limit" in last, run.stdout
