"""Shared fixtures for the data tests: the spec's official outputs and the Vicuna tokenizer."""

from __future__ import annotations

import json

import pytest
from data_spec import OFFICIAL, SPEC, need_shared


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


@pytest.fixture(scope="session")
def tiny_train_models(tmp_path_factory):
    """A tiny CLIP and a tiny Llama on disk (`model.vision_tower`, `model.llm` of recipes/tiny_cpu.yaml)."""
    from llava15.testing import make_tiny_clip, make_tiny_llama

    root = tmp_path_factory.mktemp("tiny_train_models")
    return {"clip": make_tiny_clip(root / "clip"), "llama": make_tiny_llama(root / "llama")}
