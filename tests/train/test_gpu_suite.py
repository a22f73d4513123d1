"""`benchmarks/gpu_suite.sh --dry-run` runs the GPU suite's code path on CPU with tiny shapes."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.train.conftest import REPO, subprocess_env


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not available")
def test_gpu_suite_dry_run_prints_both_stages() -> None:
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), "--dry-run"], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.strip()}
    assert "samples/s" in rows["stage"] and "MFU" in rows["stage"]
    for stage in ("stage1", "stage2_lora"):
        assert float(rows[stage][1]) > 0, proc.stdout
