"""Decode-step paths: the lookahead (a greedy batch launches step n+1 before the host reads token n) and
the CPU lm_head weight copies give the tokens of the plain loop and of transformers' generate."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from PIL import Image

from llava15.infer.decoding import DecodingParams
from llava15.infer.engine import Engine, load_generation_bundle

CONVS = ["<image>\nWhat is this?", "Hello there, how are you doing today, my good friend?",
         "<image>\nDescribe the picture in detail.", "Hi"]
IMAGES = [[Image.new("RGB", (40, 30), (200, 10, 10))], [], [Image.new("RGB", (20, 64), (0, 90, 200))], []]


@pytest.fixture(scope="module")
def bundle(tiny_llava_dir: Path):
    # this module's own copy: one test edits the lm_head weights
    return load_generation_bundle(str(tiny_llava_dir), device="cpu")


def _events(engine: Engine, rows, params) -> list[list[dict]]:
    return [[dataclasses.asdict(ev) for ev in step] for step in engine.run(rows, params)]


def _hf_tokens(bundle, rows, n: int) -> list[list[int]]:
    """transformers' greedy generate on the same left-padded ids, cut after the first stop id."""
    width, pad = max(len(r.ids) for r in rows), bundle.engine.pad_id
    ids = torch.tensor([[pad] * (width - len(r.ids)) + r.ids for r in rows])
    mask = torch.tensor([[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in rows])
    pix = [r.pixel_values for r in rows if r.pixel_values is not None]
    with torch.inference_mode():
        out = bundle.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                                    pad_token_id=pad, **({"pixel_values": torch.cat(pix)} if pix else {}))
    stops = bundle.engine.stop_ids
    return [row[:next((k + 1 for k, t in enumerate(row) if t in stops), len(row))]
            for row in out[:, width:].tolist()]


def _greedy_tokens(engine: Engine, rows, n: int) -> list[list[int]]:
    """Each row's generated ids (greedy, at most `n`), in row order."""
    got = {ev.row: ev.token_ids for step in engine.run(rows, [DecodingParams(max_new_tokens=n)] * len(rows))
           for ev in step if ev.finished}
    return [got[i] for i in range(len(rows))]


def test_lookahead_gives_the_events_of_the_plain_loop(bundle):
    plain, ahead = Engine(bundle, lookahead=False), Engine(bundle, lookahead=True)
    rows = [plain.prepare(c, i) for c, i in zip(CONVS, IMAGES)]
    # rows that end at different steps (length limits, a stop string), and one that runs past its stop id
    params = [DecodingParams(max_new_tokens=3), DecodingParams(max_new_tokens=12, stop=("e",)),
              DecodingParams(max_new_tokens=9, ignore_eos=True), DecodingParams(max_new_tokens=1)]
    events = _events(ahead, rows, params)
    assert events == _events(plain, rows, params)
    assert sum(ev["finished"] for step in events for ev in step) == len(rows)
    alone = [_events(ahead, [r], [p]) for r, p in zip(rows, params)]
    finals = {ev["row"]: ev["token_ids"] for step in events for ev in step if ev["finished"]}
    assert [a[-1][0]["token_ids"] for a in alone] == [finals[i] for i in range(len(rows))]


def test_lookahead_tokens_equal_transformers_generate(bundle):
    ahead = Engine(bundle, lookahead=True)
    rows = [ahead.prepare(c, i) for c, i in zip(CONVS, IMAGES)]
    assert _greedy_tokens(ahead, rows, 10) == _hf_tokens(bundle, rows, 10)


def test_compiled_decode_steps_give_transformers_generate_tokens(bundle):
    """`compile_decode=True`: the decode step runs through torch.compile (cache length rounded up to a
    bucket); greedy tokens still equal transformers' generate, batch 1 and batch 4, and a second run of
    the same shape reuses the kept step."""
    from llava15.infer.engine import COMPILE_CACHE_BUCKET

    compiled = Engine(bundle, compile_decode=True)
    rows = [compiled.prepare(c, i) for c, i in zip(CONVS, IMAGES)]
    for batch in (rows[2:3], rows):
        assert _greedy_tokens(compiled, batch, 10) == _hf_tokens(bundle, batch, 10)
    kept = compiled._steps.kept
    assert kept is not None and kept.shape[1] % COMPILE_CACHE_BUCKET == 0
    compiled.generate(CONVS, IMAGES, max_new_tokens=4)
    assert compiled._steps.kept is kept


def test_sampled_and_json_batches_do_not_look_ahead_and_keep_their_results(bundle):
    plain, ahead = Engine(bundle, lookahead=False), Engine(bundle, lookahead=True)
    kw = {"max_new_tokens": 6, "temperature": 0.8, "seed": 5}
    assert ahead.generate(CONVS, IMAGES, **kw) == plain.generate(CONVS, IMAGES, **kw)
    kw = {"max_new_tokens": 6, "response_format": "json_object"}
    assert ahead.generate(CONVS, IMAGES, **kw) == plain.generate(CONVS, IMAGES, **kw)


@pytest.mark.parametrize("batch", [1, 3])
def test_engine_follows_lm_head_weights_updated_in_place(bundle, batch):
    """An engine kept across training steps (in-place optimizer updates) decodes with the new weights."""
    engine = Engine(bundle)
    rows = [engine.prepare(c, i) for c, i in zip(CONVS[:batch], IMAGES[:batch])]
    params = [DecodingParams(max_new_tokens=5, ignore_eos=True)] * batch

    def tokens() -> list[list[int]]:
        return [ev.token_ids for step in engine.run(rows, params) for ev in step if ev.finished]

    before = tokens()
    weight = bundle.model.lm_head.weight
    with torch.no_grad():
        weight.neg_()  # in place, as an optimizer step updates it: argmax becomes argmin
    try:
        after = tokens()
        assert after != before
        assert after == [ev.token_ids for step in Engine(bundle).run(rows, params) for ev in step if ev.finished]
    finally:
        with torch.no_grad():
            weight.neg_()
    assert tokens() == before


def test_kept_decode_step_gives_the_results_of_fresh_ones(bundle):
    """`cuda_graphs=True` keeps the last decode step (its cache) for the next run of the same shape; on CPU
    it is kept too, without a graph. Same shape, another shape, an unfinished run: plain results."""
    plain, kept = Engine(bundle), Engine(bundle, cuda_graphs=True)
    rows = [plain.prepare(c, i) for c, i in zip(CONVS, IMAGES)]
    p6 = [DecodingParams(max_new_tokens=6, ignore_eos=True)] * 2
    expected = _events(plain, rows[:2], p6)
    assert _events(kept, rows[:2], p6) == expected
    assert _events(kept, rows[:2], p6) == expected  # the same step again: its cache was emptied
    unfinished = kept.run(rows[:2], p6)
    next(unfinished)  # holds the kept step: the next run must get its own
    assert _events(kept, rows[2:], p6) == _events(plain, rows[2:], p6)
    assert [list(step) for step in unfinished] == [list(step) for step in plain.run(rows[:2], p6)][1:]
    assert _events(kept, rows[:1], p6[:1]) == _events(plain, rows[:1], p6[:1])


@pytest.mark.parametrize("rows", [1, 3, 16])
def test_decode_head_equals_the_linear_and_follows_weight_updates(rows):
    """The re-laid-out copies (transposed for one row, oneDNN-packed for several) give the Linear's own
    logits, and are remade after an in-place update of the weight (an optimizer step between evaluations)."""
    from llava15.infer.lm_head import DecodeHead

    torch.manual_seed(0)
    head = torch.nn.Linear(64, 500, bias=False)
    fast = DecodeHead(head)
    x = torch.randn(rows, 64)
    torch.testing.assert_close(fast(x), head(x), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        head.weight.mul_(-2.0)
    torch.testing.assert_close(fast(x), head(x), rtol=1e-5, atol=1e-5)
