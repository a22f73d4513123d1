"""Each supported LLM family and vision tower, in miniature, end to end.

Llama-3, Qwen2, Mistral and Phi-3 (`llava15.testing.FAMILIES`: the family's architecture, special tokens
and real chat template string) each train two steps through `llava15 train`, save, load and chat; their
prompts and label masks match the family's own chat template. The SigLIP tower (no CLS token, its own
normalisation) runs with the Qwen2 family.
"""

from __future__ import annotations

import json
import math
import os

import pytest
from PIL import Image

from llava15.cli import main
from llava15.data.conversation import Conversation, Message
from llava15.data.templates import get_template
from llava15.data.tokenization import IGNORE_INDEX, encode_conversation
from llava15.infer.export import validate_vllm_layout
from llava15.model.tokenizer import add_image_token
from llava15.testing import (
    FAMILIES,
    make_tiny_clip,
    make_tiny_family_lm,
    make_tiny_family_tokenizer,
    make_tiny_siglip,
)
from tests.train.conftest import TINY_RECIPE, write_dataset

TOWER = {"llama3": "clip", "qwen2": "siglip", "mistral": "clip", "phi3": "clip"}
SYSTEM_ROLE = {"llama3", "qwen2", "phi3"}  # Mistral's template refuses a system message


def _conversation(family: str) -> list[Message]:
    msgs = [Message("user", "<image>\nWhat is in the image?"), Message("assistant", "A red circle."),
            Message("user", "And the square?"), Message("assistant", "It is blue, next to 3 stars.")]
    return ([Message("system", "You are a helpful assistant.")] if family in SYSTEM_ROLE else []) + msgs


def _hf_text(tok, msgs: list[Message], generation: bool) -> str:
    return tok.apply_chat_template([{"role": m.role, "content": m.content} for m in msgs], tokenize=False,
                                   add_generation_prompt=generation)


def _supervised(enc) -> list[int]:
    return [t for t, label in zip(enc.input_ids, enc.labels) if label != IGNORE_INDEX]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_prompt_and_masks_match_the_familys_chat_template(family, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(make_tiny_family_tokenizer(tmp_path / "tok", family))
    image_id = add_image_token(tok)
    tmpl = get_template(FAMILIES[family]["template"])
    msgs = _conversation(family)
    # llava15 adds BOS as an id; a Jinja template writes it as text, or leaves it to the tokenizer (Phi-3)
    bos_text = tok.bos_token if tmpl.bos and "bos_token" in tok.chat_template else ""
    if tmpl.bos and not bos_text:
        assert tok("x").input_ids[0] == tok.bos_token_id
    eos_tail = tok.eos_token if family == "phi3" else ""  # Phi-3's template closes a finished chat with EOS
    assert bos_text + tmpl.render(msgs[:-1], add_generation_prompt=True) == _hf_text(tok, msgs[:-1], True)
    assert bos_text + tmpl.render(msgs) + eos_tail == _hf_text(tok, msgs, False)

    conv = Conversation("c", msgs, ["a.png"])
    ours = encode_conversation(conv, tok, tmpl, image_id)
    theirs = encode_conversation(conv, tok, "hf_chat_template", image_id)  # masks derived from the Jinja
    assert _supervised(ours) == _supervised(theirs) and len(_supervised(ours)) > 10
    assert tok.decode(_supervised(ours)).count(tmpl.stop_strings[0]) == 2, "each answer ends with its stop token"
    if FAMILIES[family]["tokenizer"] == "bpe":  # byte-level BPE: the whole rendered chat tokenizes the same
        whole = tok(_hf_text(tok, msgs, False), add_special_tokens=False).input_ids
        assert ours.input_ids == theirs.input_ids == whole


@pytest.fixture(scope="module")
def towers(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("towers")
    return {"clip": str(make_tiny_clip(root / "clip")), "siglip": str(make_tiny_siglip(root / "siglip"))}


@pytest.fixture
def same_environment():
    """`main` quiets the libraries through environment variables; keep them from leaking into later tests."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_trains_saves_loads_and_chats(family, towers, tmp_path, capsys, same_environment):
    import llava15

    lm = make_tiny_family_lm(tmp_path / "lm", family)
    data = write_dataset(tmp_path / "data", n=3, text_only=1)
    template = FAMILIES[family]["template"]
    out = tmp_path / "run"
    overrides = {
        "model.vision_tower": towers[TOWER[family]], "model.llm": str(lm), "data.path": data["path"],
        "data.image_folder": data["image_folder"], "data.template": template, "train.output_dir": str(out),
        "train.max_steps": 2, "train.global_batch_size": 2, "train.micro_batch_size": 2,
        "train.resume": "none", "train.warmup_ratio": 0.0,
        # SigLIP has no CLS token: every output token is an image feature
        "model.vision_feature_select_strategy": "full" if TOWER[family] == "siglip" else "default",
    }
    assert main(["train", str(TINY_RECIPE), *[f"{k}={v}" for k, v in overrides.items()]]) == 0, \
        capsys.readouterr().err[-2000:]
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    meta = json.loads((out / "final" / "llava15.json").read_text())
    assert meta["template"] == template
    assert validate_vllm_layout(out / "final") == []  # what vLLM and the HF processor would load

    bundle = llava15.load(str(out / "final"), device="cpu")
    assert bundle.template == template
    patches = (56 // 14) ** 2
    assert bundle.num_image_tokens == patches  # CLIP: CLS dropped by `default`; SigLIP: no CLS, `full`
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    replies = bundle.generate([[Message("user", "<image>\nWhat is in the image?")]], [[image]],
                              max_new_tokens=4, temperature=0)
    assert len(replies) == 1 and isinstance(replies[0], str)
