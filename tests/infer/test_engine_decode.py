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


@pytest.mark.parametrize("path", ["screen_rows", "screen_cols", "fp32", None])
def test_greedy_head_returns_the_fp32_argmax_even_for_near_ties(path):
    """One greedy row may be screened with a bf16 copy of the lm_head weight ([V, H] or [H, V]) and the
    candidates recomputed in fp32, or take the fp32 logits (`None`: the timed choice among the three):
    the token is always the fp32 logits' argmax (first index on exact ties), near-ties included."""
    from llava15.infer.lm_head import COPIES_OF_PATH, DecodeHead

    torch.manual_seed(0)
    head = torch.nn.Linear(64, 500, bias=False)
    with torch.no_grad():
        head.weight[7] = head.weight[3] * (1 + 3e-6)  # 7 beats 3 by a few fp32 ulps along w3
        head.weight[11] = head.weight[3]  # an exact tie with 3: argmax keeps the lower index
        # a crowd of rows closer together than bf16 can tell apart (relative spacing 2^-8)
        head.weight[100:300] = head.weight[99] * (1 + 2e-3 * torch.randn(200, 64))
    screened = DecodeHead(head, greedy_path=path)
    w3, w99 = head.weight[3].detach(), head.weight[99].detach()
    xs = [w3.clone(), -w3, torch.zeros(64)] + [torch.randn(64) * s for s in (0.01, 1.0, 100.0) for _ in range(20)]
    xs += [w99 * (1 + 1e-2 * torch.randn(64)) for _ in range(40)]
    for x in xs:
        assert screened.greedy(x[None]) == [int(head(x[None]).argmax())]
    assert screened.greedy(w3[None]) == [7]
    if path is None:  # the timed trials chose a path and freed the other paths' weight copies
        assert set(screened._copies) <= set(COPIES_OF_PATH[screened.greedy_path])

    # Row 5 wins in fp32, row 9 in bf16: 5's weights all sit just below a bf16 rounding midpoint (they
    # round down), 9's half just above one (they round up) and half exactly on the lower value.
    low = (1 + torch.rand(64)).to(torch.bfloat16).float()
    mid = low + 2.0 ** -8
    with torch.no_grad():
        head.weight.mul_(0.01)
        head.weight[5] = mid - 2.0 ** -13
        head.weight[9] = torch.where(torch.arange(64) < 32, mid + 2.0 ** -13, low)
    ones = torch.ones(1, 64)
    assert int(head(ones).argmax()) == 5 and int((ones.bfloat16() @ head.weight.bfloat16().t()).argmax()) == 9
    assert DecodeHead(head, greedy_path=path).greedy(ones) == [5]
    if path is None:
        assert screened.greedy(ones) == [5]  # the chosen path's copies are remade after the in-place update


def test_greedy_head_rejects_an_unknown_path():
    from llava15.infer.lm_head import DecodeHead

    with pytest.raises(ValueError, match="greedy_path must be one of"):
        DecodeHead(torch.nn.Linear(4, 8, bias=False), greedy_path="int8")
