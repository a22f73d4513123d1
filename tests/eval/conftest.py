"""Shared helpers for the eval tests: where the spec fixtures live (skip when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURES = SHARED / "spec" / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"needs the spec fixtures at {FIXTURES} (../shared next to the repo root), absent here")
    return FIXTURES
