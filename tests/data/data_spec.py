"""Paths and helpers for the data tests' reference fixtures (../shared/spec next to the repo root)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
SPEC = SHARED / "spec"
OFFICIAL = SPEC / "fixtures" / "official"
IMAGE_ID = 32000  # our <image> id in the HF layout; the original's -200


def need_shared() -> None:
    if not OFFICIAL.is_dir():
        pytest.skip(f"reference fixtures not found at {OFFICIAL} (../shared next to the repo root is absent)")


def to_ours(ids: list[int]) -> list[int]:
    return [IMAGE_ID if i == -200 else i for i in ids]
