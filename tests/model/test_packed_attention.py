"""Packed-row attention: every packed sample gets the logits, loss and gradients it gets alone, the sample
boundaries travel as host integers (no device read in the forward), and the last layer's query
restriction changes nothing the loss reads."""

from __future__ import annotations

import pytest
import torch
from transformers import LlavaForConditionalGeneration

from llava15.data.packing import pack_rows, plan_rows
from llava15.model.last_layer_rows import LastLayerRows, decoder_layers
from llava15.model.packed_attention import (
    KWARG,
    PACKED_SDPA,
    packed_rows,
    use_packed_attention,
    uses_packed_attention,
)
from llava15.train.loss import supervised_loss_sum, supervised_rows


def _samples(model, n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, bool]]:
    """`n` samples of mixed lengths (3-40 text tokens), every other one with an image."""
    cfg = model.config
    n_img = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
    g = torch.Generator().manual_seed(seed)
    vocab = cfg.text_config.vocab_size
    out = []
    for i in range(n):
        n_text = int(torch.randint(3, 41, (1,), generator=g))
        text = torch.randint(3, vocab - 10, (n_text + 3,), generator=g)
        image = i % 2 == 0
        ids = torch.cat([torch.tensor([1]), text[:3], *([torch.full((n_img,), cfg.image_token_id)] if image else []),
                         text[3:]])
        labels = ids.clone()
        labels[: len(ids) - n_text // 2 - 1] = -100  # the prompt and the first half of the answer: no loss
        out.append((ids, labels, image))
    return out


def _pixels(model, n: int) -> torch.Tensor | None:
    size = model.config.vision_config.image_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1)) if n else None


def _packed(model, samples, budget: int) -> dict:
    ids, labels = [s[0] for s in samples], [s[1] for s in samples]
    rows = plan_rows([len(x) for x in ids], budget)
    batch = pack_rows(ids, labels, rows, pad_token_id=0)
    order = [i for row in rows for i in row]
    batch["pixel_values"] = _pixels(model, sum(samples[i][2] for i in order))
    batch["image_order"] = [i for i in order if samples[i][2]]
    return batch


def _model(tiny_llava_dir) -> LlavaForConditionalGeneration:
    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir, dtype=torch.float32)
    model.config.text_config.use_cache = False
    return model


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("n_samples,budget,last_layer", [(1, 200, False), (5, 120, False), (16, 400, False),
                                                         (9, 160, True), (16, 400, True)])
def test_packed_rows_equal_each_sample_alone(tiny_llava_dir, n_samples, budget, last_layer):
    """Loss sum and every gradient of a packed batch (1-16 samples of mixed lengths in one or more rows,
    ragged row ends) equal the sum over the samples run alone with plain sdpa, to 1e-5 in fp32; with
    `last_layer`, the last decoder layer computes only the supervised rows."""
    model = _model(tiny_llava_dir)
    samples = _samples(model, n_samples)
    batch = _packed(model, samples, budget)

    # reference: each sample alone, its own image, plain sdpa attention
    model.zero_grad()
    pixels = batch["pixel_values"]
    image_of = {s: k for k, s in enumerate(batch["image_order"])}
    ref_total = 0.0
    for i, (ids, labels, image) in enumerate(samples):
        alone = {"input_ids": ids[None], "labels": labels[None], "attention_mask": torch.ones_like(ids)[None],
                 "pixel_values": pixels[image_of[i]:image_of[i] + 1] if image else None}
        loss, _ = supervised_loss_sum(model, alone)
        loss.backward()
        ref_total += float(loss)
    ref = _grads(model)

    assert use_packed_attention(model) and uses_packed_attention(model)
    assert model.config.text_config._attn_implementation == PACKED_SDPA
    assert model.config.vision_config._attn_implementation == "sdpa"
    model.zero_grad()
    rows = LastLayerRows(model) if last_layer else None
    packed = packed_rows(batch["position_ids"], batch["labels"] if last_layer else None)
    ctx = rows.rows_only(supervised_rows(batch["labels"])) if rows else torch.enable_grad()
    with ctx:
        loss, _ = supervised_loss_sum(model, batch, packed)
        loss.backward()
    assert float(loss) == pytest.approx(ref_total, rel=1e-5)
    got = _grads(model)
    assert got.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-5, msg=name)


def test_the_boundaries_are_host_integers_and_a_layer_compiles_as_one_graph(tiny_llava_dir):
    """No `.cpu()`/`.item()`/`.tolist()` in the forward: one decoder layer compiles with `fullgraph=True`
    (a device read would break the graph) and gives the eager result."""
    model = _model(tiny_llava_dir)
    use_packed_attention(model)
    batch = _packed(model, _samples(model, 4), 200)
    packed = packed_rows(batch["position_ids"])
    assert all(isinstance(n, int) for row in packed.lengths for n in row)
    layer = decoder_layers(model)[0]
    lm = model.model.language_model
    hidden = torch.randn(1, batch["input_ids"].shape[1], model.config.text_config.hidden_size)
    position_embeddings = lm.rotary_emb(hidden, position_ids=batch["position_ids"][:1])
    kw = {"attention_mask": None, "position_ids": batch["position_ids"][:1],
          "position_embeddings": position_embeddings, KWARG: packed_rows(batch["position_ids"][:1])}
    eager = layer(hidden, **kw)
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(hidden, **kw), eager)


def test_packed_attention_without_boundaries_is_a_clear_error(tiny_llava_dir):
    model = _model(tiny_llava_dir)
    use_packed_attention(model)
    batch = _packed(model, _samples(model, 2), 200)
    with pytest.raises(ValueError, match="llava15_packed"):
        model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], pixel_values=batch["pixel_values"])
