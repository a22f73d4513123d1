"""Shared fixtures: tiny random LLaVA checkpoints on disk, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny llava15 checkpoint (HF layout, vicuna_v1, 56 px CLIP → 16 image tokens). Read-only."""
    from llava15.testing import make_tiny_llava

    return make_tiny_llava(tmp_path_factory.mktemp("tiny") / "llava")


@pytest.fixture(scope="session")
def tiny_original_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same kind of tiny model in the original LLaVA layout (no vision weights). Read-only."""
    from llava15.testing import make_tiny_llava

    return make_tiny_llava(tmp_path_factory.mktemp("tiny") / "llava-original", layout="original")
