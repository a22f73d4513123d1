"""Packed-row attention: the same logits and gradients as transformers' own packed-sequence handling."""

from __future__ import annotations

import pytest
import torch
from transformers import LlavaForConditionalGeneration
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from llava15.data.packing import pack_rows
from llava15.model.packed_attention import (
    PACKED_SDPA,
    packed_sdpa_attention,
    sample_spans,
    use_packed_attention,
)


def _packed_batch(model) -> dict:
    """Two rows: an image sample + a text sample, and one text sample; ragged, so row ends are padded."""
    cfg = model.config
    n_img = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
    g = torch.Generator().manual_seed(0)
    vocab = cfg.text_config.vocab_size

    def sample(n_text: int, image: bool) -> torch.Tensor:
        text = torch.randint(3, vocab - 10, (n_text,), generator=g)
        parts = [torch.tensor([1]), text[:3]] + ([torch.full((n_img,), cfg.image_token_id)] if image else [])
        return torch.cat([*parts, text[3:]])

    ids = [sample(20, True), sample(13, False), sample(30, False)]
    labels = [torch.where(x == cfg.image_token_id, -100, x) for x in ids]
    batch = pack_rows(ids, labels, [[0, 1], [2]], pad_token_id=0)
    batch["pixel_values"] = torch.randn(1, 3, cfg.vision_config.image_size, cfg.vision_config.image_size,
                                        generator=g)
    return batch


def _logits_and_grads(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    out = model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"],
                position_ids=batch["position_ids"], use_cache=False)
    out.logits.float().pow(2).mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), grads


def test_packed_rows_match_transformers_block_mask(tiny_llava_dir):
    """The packed attention isolates each sample exactly as transformers' sdpa with its block-diagonal
    mask does (logits and every gradient), including GQA (the tiny LM has 4 query / 2 key-value heads)."""
    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir, dtype=torch.float32)
    model.config.text_config.use_cache = False
    batch = _packed_batch(model)
    ref_logits, ref_grads = _logits_and_grads(model, batch)
    assert use_packed_attention(model)
    assert model.config.text_config._attn_implementation == PACKED_SDPA
    assert model.config.vision_config._attn_implementation == "sdpa"
    logits, grads = _logits_and_grads(model, batch)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_packed_sample_equals_the_sample_alone(tiny_llava_dir):
    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir, dtype=torch.float32)
    use_packed_attention(model)
    batch = _packed_batch(model)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"],
                       position_ids=batch["position_ids"], use_cache=False).logits
        s, e = sample_spans(batch["position_ids"][0])[1]  # the text-only sample behind the image sample
        alone = model(input_ids=batch["input_ids"][:1, s:e], use_cache=False).logits
    torch.testing.assert_close(packed[:1, s:e], alone, rtol=1e-5, atol=1e-5)


def test_sample_spans():
    assert sample_spans(torch.tensor([0, 1, 2, 0, 1, 0])) == [(0, 3), (3, 5), (5, 6)]
    assert sample_spans(torch.tensor([0, 1, 2, 3])) == [(0, 4)]


def test_a_given_mask_is_plain_sdpa_with_that_mask(tiny_llava_dir):
    """A caller outside the packing runner that passes a mask gets transformers' sdpa with that mask."""
    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir, dtype=torch.float32)
    attn = model.model.language_model.layers[0].self_attn
    g = torch.Generator().manual_seed(1)
    q, kv = torch.randn(2, 4, 9, 16, generator=g), torch.randn(2, 2, 9, 16, generator=g)
    mask = torch.ones(2, 1, 9, 9, dtype=torch.bool).tril()
    mask[1, :, :, 6:] = False
    got, _ = packed_sdpa_attention(attn, q, kv, kv, mask, position_ids=torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4, 5]]))
    want, _ = sdpa_attention_forward(attn, q, kv, kv, mask)
    torch.testing.assert_close(got, want)


def test_missing_position_ids_is_a_clear_error(tiny_llava_dir):
    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir, dtype=torch.float32)
    attn = model.model.language_model.layers[0].self_attn
    q = torch.randn(1, 4, 5, 16)
    with pytest.raises(ValueError, match="position_ids"):
        packed_sdpa_attention(attn, q, q[:, :2], q[:, :2], None)
