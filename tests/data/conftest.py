"""Shared fixtures for the data tests: the spec folder and the Vicuna tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
SPEC = SHARED / "spec"
OFFICIAL = SPEC / "fixtures" / "official"
IMAGE_ID = 32000  # our <image> id in the HF layout; the original's -200


def need_shared() -> None:
    if not OFFICIAL.is_dir():
        pytest.skip(f"reference fixtures not found at {OFFICIAL} (../shared next to the repo root is absent)")


@pytest.fixture(scope="session")
def official():
    need_shared()
    return lambda name: json.loads((OFFICIAL / f"{name}.json").read_text())


@pytest.fixture(scope="session")
def vicuna():
    need_shared()
    pytest.importorskip("sentencepiece")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(SPEC / "fixtures" / "vicuna_tokenizer"))
    tok.pad_token = tok.unk_token  # as the original train.py does
    return tok


def to_ours(ids: list[int]) -> list[int]:
    return [IMAGE_ID if i == -200 else i for i in ids]
