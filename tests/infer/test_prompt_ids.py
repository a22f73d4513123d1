"""The engine's prompt ids equal the original inference ids (`tokenizer_image_token`) on the fixtures.

For every user turn of every fixture record, the original's ids of the prompt ending in `ASSISTANT:`
are the training `input_ids` up to where that turn's answer labels start (masking.json, Vicuna
tokenizer); the engine must produce them, with each image run collapsed back to one id.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURES = SHARED / "spec" / "fixtures"


@pytest.fixture(scope="module")
def engine():
    if not (FIXTURES / "official" / "masking.json").exists() or not (FIXTURES / "vicuna_tokenizer").exists():
        pytest.skip(f"spec fixtures not found under {FIXTURES} (../shared is absent)")
    from transformers import AutoTokenizer

    from llava15.data.images import ImageSettings
    from llava15.infer.engine import Engine
    from llava15.model.load import LlavaBundle
    from llava15.model.tokenizer import add_image_token

    tok = AutoTokenizer.from_pretrained(FIXTURES / "vicuna_tokenizer")
    image_id = add_image_token(tok)
    bundle = LlavaBundle(model=None, tokenizer=tok, template="vicuna_v1", image=ImageSettings(),
                         image_token_id=image_id, num_image_tokens=576)
    return Engine(bundle)


def _answer_starts(labels: list[int]) -> list[int]:
    return [j for j, lab in enumerate(labels) if lab != -100 and (j == 0 or labels[j - 1] == -100)]


def _collapse(ids: list[int], image_id: int) -> list[int]:
    return [t for k, t in enumerate(ids) if t != image_id or k == 0 or ids[k - 1] != image_id]


def test_engine_prompt_ids_equal_original_inference_ids(engine):
    from llava15.data.conversation import move_images_to_front
    from llava15.data.formats import record_to_conversation

    records = json.loads((FIXTURES / "official" / "masking.json").read_text())["records"]
    image_id = engine.bundle.image_token_id
    checked = 0
    for index, rec in enumerate(records):
        ref = rec["vicuna_v1"]
        if ref.get("warning"):
            continue
        conv = move_images_to_front(record_to_conversation(rec["record"], index))
        user_turns = [k for k, m in enumerate(conv.messages) if m.role == "user"]
        starts = _answer_starts(ref["labels"])
        assert len(starts) == len(user_turns), rec["record"]["id"]
        for turn, start in zip(user_turns, starts):
            expected = [image_id if t == -200 else t for t in ref["input_ids"][:start]]
            ids = engine.prompt_ids(conv.messages[: turn + 1])
            assert ids.count(image_id) == 576 * expected.count(image_id)
            assert _collapse(ids, image_id) == expected, f"{rec['record']['id']} turn {turn}"
            checked += 1
    assert checked >= 6
