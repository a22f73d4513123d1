"""The tiny SentencePiece tokenizer behaves like Vicuna's; `<image>` surgery is one special token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer

from llava15.model.tokenizer import add_image_token
from llava15.testing import make_tiny_tokenizer

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
VICUNA = SHARED / "spec" / "fixtures" / "vicuna_tokenizer"
# Not runs of spaces: there transformers' Llama tokenizer differs from SentencePiece for Vicuna's own
# tokenizer.model too ("a  b": HF ▁a ▁▁ b, SentencePiece ▁a ▁ ▁b).
TEXTS = ["What is in the image?", "There are 12 red circles.\nThe 3rd one is café-coloured.",
         "ASSISTANT: Yes", "\n\n hi"]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def test_files_mirror_vicuna(tok_dir):
    assert (tok_dir / "tokenizer.model").is_file() and (tok_dir / "tokenizer.json").is_file()
    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert type(tok).__name__ == "LlamaTokenizer"
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.pad_token is None and tok.padding_side == "right"
    assert 300 <= len(tok) <= 500


def test_hf_ids_equal_sentencepiece_ids(tok_dir):
    """The original code used the slow SentencePiece tokenizer: the HF one must give the same ids."""
    sp = spm.SentencePieceProcessor(model_file=str(tok_dir / "tokenizer.model"))
    tok = AutoTokenizer.from_pretrained(tok_dir)
    for text in TEXTS:
        assert tok(text).input_ids == [1, *sp.encode(text)], text
    assert all(len(tok.convert_ids_to_tokens([i])[0].strip("▁")) <= 1 for i in tok("2024")["input_ids"][1:])


def _after_eos_piece(tok) -> str:
    ids = tok("A cat.</s>USER: hi", add_special_tokens=False).input_ids
    return tok.convert_ids_to_tokens(ids[ids.index(tok.eos_token_id) + 1])


def test_special_token_behaviour_matches_vicuna(tok_dir):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    ids = tok("hello world").input_ids
    assert ids[0] == 1 and ids[-1] != 2  # BOS added, no EOS
    assert tok.eos_token_id in tok("A cat.</s>USER: hi").input_ids  # "</s>" in text is the special token
    assert not _after_eos_piece(tok).startswith("▁")  # legacy=false: no dummy prefix after </s>
    if not VICUNA.is_dir():
        pytest.skip(f"Vicuna tokenizer fixture not found at {VICUNA}")
    vicuna = AutoTokenizer.from_pretrained(VICUNA)
    assert vicuna("hello world").input_ids[0] == 1
    assert not _after_eos_piece(vicuna).startswith("▁")
    ours = json.loads((tok_dir / "tokenizer_config.json").read_text())
    assert ours.get("padding_side") == json.loads((VICUNA / "tokenizer_config.json").read_text())["padding_side"]


def test_add_image_token_is_one_special_token_and_idempotent(tok_dir):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    n = len(tok)
    image_id = add_image_token(tok)
    assert image_id == n and tok.pad_token == "<pad>" and tok.pad_token_id == n + 1
    assert add_image_token(tok) == image_id and len(tok) == n + 2
    ids = tok("USER: <image>\nWhat", add_special_tokens=False).input_ids
    assert ids.count(image_id) == 1 and "<image>" not in tok.decode(ids, skip_special_tokens=True)


def test_saved_chat_templates_render_like_the_template_table(tok_dir):
    """chat_template.jinja (for HF processors / vLLM) renders the same strings as data.templates."""
    from llava15.data.conversation import Message
    from llava15.data.templates import TEMPLATES, get_template
    from llava15.model.tokenizer import chat_template_for

    tok = AutoTokenizer.from_pretrained(tok_dir)
    chats = [[Message("user", "<image>\nWhat is it?"), Message("assistant", "A cat."), Message("user", "Color?")],
             [Message("system", "Be brief."), Message("user", " hi "), Message("assistant", " yo ")]]
    caption = [Message("user", "Describe.\n<image>"), Message("assistant", "a red cat")]
    for name in TEMPLATES:
        template = get_template(name)
        tok.chat_template = chat_template_for(name)
        cases = [(caption, False), (caption, True), (chats[1], True)] if name == "plain" else [
            (c, g) for c in chats for g in (False, True)]
        for messages, gen in cases:
            want = ("<s>" if template.bos else "") + template.render(messages, add_generation_prompt=gen)
            got = tok.apply_chat_template([{"role": m.role, "content": m.content} for m in messages],
                                          add_generation_prompt=gen, tokenize=False)
            assert got == want, (name, gen)


def test_training_is_deterministic(tok_dir, tmp_path):
    again = make_tiny_tokenizer(tmp_path / "again")
    for name in ("tokenizer.model", "tokenizer.json"):
        assert (again / name).read_bytes() == (tok_dir / name).read_bytes(), name
