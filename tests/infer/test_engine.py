"""The engine: token-exact with transformers' generate, batch-invariant, stops, sampling, images, JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from llava15.data.conversation import Conversation, Message
from llava15.infer.engine import Engine, GenerationError, load_generation_bundle


@pytest.fixture(scope="module")
def bundle(tiny_llava_dir: Path):
    return load_generation_bundle(str(tiny_llava_dir), device="cpu")


@pytest.fixture(scope="module")
def engine(bundle) -> Engine:
    return bundle.engine


def _img(size=(40, 30), color=(200, 10, 10), mode="RGB") -> Image.Image:
    return Image.new("RGB", size, color).convert(mode)


# Mixed prompt lengths, with and without images (rows get left padded differently).
CONVS = ["<image>\nWhat is this?", "Hello there, how are you doing today, my good friend?",
         "<image>\nDescribe the picture in detail.", "Hi"]
IMAGES = [[_img()], [], [_img((20, 64), (0, 90, 200))], []]


def _hf_new_tokens(bundle, engine: Engine, convs, images, n: int) -> list[list[int]]:
    """Reference: transformers' generate on the same ids, left padded, greedy."""
    rows = [engine.prepare(c, i) for c, i in zip(convs, images)]
    width = max(len(r.ids) for r in rows)
    pad = engine.pad_id
    ids = torch.tensor([[pad] * (width - len(r.ids)) + r.ids for r in rows])
    mask = torch.tensor([[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in rows])
    pix = [r.pixel_values for r in rows if r.pixel_values is not None]
    extra = {"pixel_values": torch.cat(pix)} if pix else {}
    with torch.inference_mode():
        out = bundle.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                                    pad_token_id=pad, **extra)
    result = []
    eos = set(engine.stop_ids)
    for row in out[:, width:].tolist():
        cut = next((k + 1 for k, t in enumerate(row) if t in eos), len(row))
        result.append(row[:cut])
    return result


def _engine_tokens(engine: Engine, convs, images, n: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in convs]
    for ev in engine.stream(convs, images, max_new_tokens=n):
        if ev.finished:
            out[ev.row] = ev.token_ids
    return out


@pytest.mark.parametrize("rows", [1, 4])
def test_greedy_tokens_equal_transformers_generate(bundle, engine, rows):
    convs, images = CONVS[:rows], IMAGES[:rows]
    if rows == 1:
        convs, images = [CONVS[2]], [IMAGES[2]]
    assert _engine_tokens(engine, convs, images, 12) == _hf_new_tokens(bundle, engine, convs, images, 12)


def test_batch_results_equal_batch_of_one(bundle):
    batched = bundle.generate(CONVS, IMAGES, max_new_tokens=10)
    alone = [bundle.generate([c], [i], max_new_tokens=10)[0] for c, i in zip(CONVS, IMAGES)]
    assert batched == alone


def test_stream_deltas_add_up_to_the_generated_text(engine):
    texts = engine.generate(CONVS, IMAGES, max_new_tokens=10)
    pieces = [""] * len(CONVS)
    finals = [None] * len(CONVS)
    for ev in engine.stream(CONVS, IMAGES, max_new_tokens=10):
        pieces[ev.row] += ev.delta
        if ev.finished:
            finals[ev.row] = ev
    assert pieces == texts
    assert all(f.finish_reason in ("stop", "length") and 1 <= f.completion_tokens <= 10 for f in finals)


def test_stop_string_cuts_the_reply(engine):
    full = engine.generate([CONVS[1]], max_new_tokens=16)[0]
    visible = [ch for ch in full[1:] if ch != "\ufffd" and not ch.isspace()]
    if len(visible) < 2:
        pytest.skip(f"the random model's reply {full!r} has no usable stop string")
    stop = visible[1]
    cut = engine.generate([CONVS[1]], max_new_tokens=16, stop=[stop])[0]
    assert cut == full[: full.index(stop)].strip()


def test_max_new_tokens_bounds_the_reply(engine):
    events = [ev for ev in engine.stream([CONVS[1]], max_new_tokens=3, ignore_eos=True) if ev.finished]
    assert events[0].completion_tokens == 3 and events[0].finish_reason == "length"


def test_seeded_sampling_is_reproducible_and_batch_independent(engine):
    kw = {"max_new_tokens": 8, "temperature": 0.9, "top_p": 0.9, "seed": 7}
    a = engine.generate(CONVS, IMAGES, **kw)
    b = engine.generate(CONVS, IMAGES, **kw)
    alone = engine.generate([CONVS[2]], [IMAGES[2]], **kw)
    assert a == b and alone[0] == a[2]


def test_images_of_any_size_mode_and_several_per_conversation(engine):
    odd = [_img((1, 1)), _img((300, 7), mode="L"), _img((17, 90), mode="RGBA"), _img((33, 33), mode="P"),
           _img((64, 48), mode="CMYK")]
    convs = [f"<image>\nImage {k}?" for k in range(len(odd))]
    convs.append(Conversation("multi", [Message("user", "<image>\n<image>\nCompare them.")]))
    imgs = [[im] for im in odd] + [[odd[0], odd[2]]]
    texts = engine.generate(convs, imgs, max_new_tokens=4)
    assert len(texts) == len(convs) and all(isinstance(t, str) for t in texts)


def test_image_paths_and_multi_turn_history(engine, tmp_path):
    _img().save(tmp_path / "a.png")
    conv = Conversation("c", [Message("user", "<image>\nWhat is it?"), Message("assistant", "A red box."),
                              Message("user", "And the colour?")], ["a.png"])
    assert engine.generate([conv], image_root=tmp_path, max_new_tokens=4) == \
        engine.generate([conv], [[_img()]], max_new_tokens=4)


def test_marker_and_image_counts_must_agree(engine):
    with pytest.raises(GenerationError, match="1 <image> marker.*0 image"):
        engine.generate(["<image>\nHi"], [[]])
    with pytest.raises(GenerationError, match="last message must be from the user"):
        engine.generate([[{"role": "system", "content": "x"}]])


@pytest.mark.parametrize("max_tokens,temperature", [(2, 0.0), (7, 1.0), (30, 0.0)])
def test_json_mode_output_always_parses(engine, max_tokens, temperature):
    texts = engine.generate(CONVS, IMAGES, max_new_tokens=max_tokens, temperature=temperature, seed=3,
                            response_format={"type": "json_object"})
    for text in texts:
        assert isinstance(json.loads(text), dict), text


def test_llava15_load_returns_a_bundle_that_generates(tiny_llava_dir):
    import llava15

    bundle = llava15.load(str(tiny_llava_dir), device="cpu")
    texts = bundle.generate([Conversation("q", [Message("user", "<image>\nWhat is it?")])], [[_img()]],
                            max_tokens=3, temperature=0)
    assert len(texts) == 1 and isinstance(texts[0], str)
    assert bundle.template == "vicuna_v1" and bundle.model is not None


def test_final_text_is_the_originals_decode_for_byte_fallback_runs(engine):
    """`<0x37><0x6B><0xA0>` is not valid UTF-8: `tokenizer.decode` renders all three bytes as U+FFFD,
    although the first two alone read `7k`. The reply is the original's decode; no delta shows `7k`."""
    from llava15.infer.decoding import TextStream, final_text

    tok = engine.tokenizer
    ids = tok.convert_tokens_to_ids(["<0x37>", "<0x6B>", "<0xA0>"])
    word = tok.convert_tokens_to_ids(tok.tokenize("Hello"))
    for row in (ids, word + ids, ids + word, word + ids + [tok.eos_token_id]):
        expected = tok.decode(row, skip_special_tokens=True).strip()
        assert final_text(tok, row) == expected
        stream = TextStream(tok, engine.template.stop_strings)
        deltas = "".join(stream.push(t)[0] for t in row) + stream.finish()
        assert stream.final_text == expected and deltas == expected, (row, deltas)
    assert final_text(tok, ids) == "\ufffd" * 3


def test_final_text_cuts_at_the_first_stop_string(engine):
    from llava15.infer.decoding import final_text

    tok = engine.tokenizer
    row = tok.encode(" one two. three two.", add_special_tokens=False)
    assert final_text(tok, row, ["two"]) == "one"
    assert final_text(tok, row, ["three", "."]) == "one two"


def test_every_reply_equals_the_decode_of_its_new_tokens(engine):
    """Over many random-model replies (byte pieces included): text == decode(ids - stop id).strip()."""
    tok = engine.tokenizer
    convs = CONVS + [f"Question number {k}: what do you see?" for k in range(6)]
    images = IMAGES + [[]] * 6
    for ev in engine.stream(convs, images, max_new_tokens=24):
        if ev.finished:
            ids = [t for t in ev.token_ids if t not in engine.stop_ids]
            assert ev.text == tok.decode(ids, skip_special_tokens=True).strip(), ev.token_ids


def test_each_image_is_encoded_once_for_all_its_questions(bundle, engine, tmp_path):
    """The eval runner passes one image object to every question about it (and paths repeat): the
    vision tower sees each unique image once per call, and the answers equal those without sharing."""
    seen: list[int] = []
    hook = bundle.model.model.vision_tower.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    try:
        red, blue = _img(), _img((20, 64), (0, 90, 200))
        blue.save(tmp_path / "blue.png")
        qs = ["<image>\nWhat is this?", "<image>\nWhat colour is it?", "<image>\nDescribe it in detail, please.",
              "Hi"]
        convs = qs[:3] + qs[:3] + [qs[3]]
        shared = [[red]] * 3 + [["blue.png"]] * 3 + [[]]
        copies = [[red.copy()] for _ in range(3)] + [[blue.copy()] for _ in range(3)] + [[]]
        answers = engine.generate(convs, shared, image_root=tmp_path, max_new_tokens=8, batch_size=3)
        assert sum(seen) == 2, seen  # red once, blue once, although they span two batches
        seen.clear()
        assert engine.generate(convs, copies, max_new_tokens=8, batch_size=3) == answers
        assert sum(seen) == 6, seen
    finally:
        hook.remove()
