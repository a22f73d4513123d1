"""Template table strings and the `hf_chat_template` mode derived from a tokenizer's Jinja template."""

from __future__ import annotations

import copy

import pytest

from llava15.data.conversation import Conversation, DataError, Message
from llava15.data.templates import SMOLLM2_SYSTEM, get_template
from llava15.data.tokenization import IGNORE_INDEX, encode_conversation

CHATML_JINJA = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + SMOLLM2_SYSTEM + "<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAVA_HF_JINJA = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{{ message['content'] + ' ' }}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}"
    "{% endif %}")
UPPER_JINJA = "{% for message in messages %}{{ message['content'] | upper }}{% endfor %}"

U, A, S = "user", "assistant", "system"
CONVS = [
    [(U, "<image>\nWhat is in the image?"), (A, "A red circle.")],
    [(S, "Be brief."), (U, "Colour?"), (A, "Blue."), (U, "Shape?"), (A, "A square.")],
    [(U, "two  spaces\n\nand lines "), (A, "\nstarts with a newline")],
]


@pytest.fixture(scope="module")
def tok(vicuna):
    t = copy.deepcopy(vicuna)  # a private copy: tokens and chat templates are added below
    t.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<image>"]})
    return t


def _msgs(turns):
    return [Message(r, c) for r, c in turns]


def _merged(segments):
    out = []
    for s in segments:
        if out and out[-1][1] == s.supervised:
            out[-1] = (out[-1][0] + s.text, s.supervised)
        else:
            out.append((s.text, s.supervised))
    return out


def test_hf_chat_template_chatml_equals_table(tok):
    tok.chat_template = CHATML_JINJA
    hf, table = get_template("hf_chat_template", tok), get_template("chatml")
    assert hf.stop_strings[0] == "<|im_end|>"
    image_id = tok.convert_tokens_to_ids("<image>")
    for turns in CONVS:
        assert _merged(hf.segments(_msgs(turns))) == _merged(table.segments(_msgs(turns)))
        assert hf.render(_msgs(turns[:1]), True) == tok.apply_chat_template(
            [{"role": r, "content": c} for r, c in turns[:1]], tokenize=False, add_generation_prompt=True)
        conv = Conversation("c", _msgs(turns), ["x"] * sum(c.count("<image>") for _, c in turns))
        a, b = encode_conversation(conv, tok, hf, image_id), encode_conversation(conv, tok, table, image_id)
        assert (a.input_ids, a.labels) == (b.input_ids, b.labels)


def test_hf_chat_template_without_eos_supervises_answers_only(tok):
    tok.chat_template = LLAVA_HF_JINJA
    hf = get_template("hf_chat_template", tok)
    segs = hf.segments(_msgs(CONVS[1]))
    assert [s.text for s in segs if s.supervised] == ["Blue.", "A square."]
    assert hf.stop_strings == [tok.eos_token]


def test_hf_chat_template_that_changes_contents_is_refused(tok):
    tok.chat_template = UPPER_JINJA
    with pytest.raises(DataError, match="transforms message contents"):
        get_template("hf_chat_template", tok).segments(_msgs(CONVS[0]))
    with pytest.raises(ValueError, match="pass tokenizer"):
        get_template("hf_chat_template")


def test_other_family_strings():
    msgs = _msgs([(S, "SYS"), (U, "Q"), (A, "A"), (U, "Q2")])
    assert get_template("llama3").render(msgs, True) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nSYS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
        "\n\nA<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nQ2<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert get_template("chatml").render(msgs[1:], True) == (
        f"<|im_start|>system\n{SMOLLM2_SYSTEM}<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n"
        "<|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n")
    assert get_template("mistral_instruct").render(msgs, True) == "[INST] SYS\n\nQ [/INST]A</s>[INST] Q2 [/INST]"
    assert get_template("phi3").render(msgs, True) == (
        "<|system|>\nSYS<|end|>\n<|user|>\nQ<|end|>\n<|assistant|>\nA<|end|>\n<|user|>\nQ2<|end|>\n<|assistant|>\n")
    for name in ("llama3", "chatml", "mistral_instruct", "phi3", "vicuna_v1", "plain"):
        assert get_template(name).stop_strings
    sup = [s.text for s in get_template("phi3").segments(msgs) if s.supervised]
    assert sup == ["A<|end|>"]


def test_chatml_labels_are_answers_plus_im_end(tok):
    conv = Conversation("c", _msgs(CONVS[1]), [])
    enc = encode_conversation(conv, tok, "chatml", tok.convert_tokens_to_ids("<image>"))
    assert enc.input_ids[0] != tok.bos_token_id or get_template("chatml").bos
    sup = [t for t in enc.labels if t != IGNORE_INDEX]
    assert tok.decode(sup).replace(" ", "") == "Blue.<|im_end|>Asquare.<|im_end|>"


def test_roles_must_alternate():
    with pytest.raises(DataError, match="should be from assistant"):
        get_template("vicuna_v1").segments(_msgs([(U, "a"), (U, "b")]))
