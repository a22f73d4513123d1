"""Attention for packed training rows: each sample attends to itself only, at the cost of its own length.

A packed row holds several samples with `position_ids` restarting at 0 for each and no attention mask
(`llava15.data.packing`). transformers isolates such samples under `sdpa` by building a block-diagonal
causal mask over the whole row, and SDPA then computes every block of it: a row of total length L costs
L² per layer whatever its samples. `packed_sdpa_attention` runs causal SDPA on each sample's own span,
so the row costs the sum of the samples' squared lengths (bench-small stage 2, 8 samples in one row of
5,893 tokens: 4.9 M query-key pairs instead of 34.7 M). That lets the runner pack each micro-batch into
one row with no padding; with rows of 2,048 under transformers' mask the same step took 6.7 s, under
this attention 5.6 s, as one row 4.0 s (2-core CPU, benchmarks/history.md).

It is registered with transformers' `AttentionInterface` under `PACKED_SDPA` (a public extension point;
no transformers code is changed) and the training runner switches the language model to it only for
`data.batching: pack`, whose batches never carry an attention mask: transformers builds no mask for a
registered attention without a mask function, so a padded batch must not use it. Saved checkpoints
do not record it: transformers does not serialise the attention implementation. In training's last
decoder layer only the queries the loss needs are computed (`model.last_layer_rows`).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from llava15.model.last_layer_rows import first_query_row

PACKED_SDPA = "llava15_packed_sdpa"


def sample_spans(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each sample in a row of positions that restart at 0 for every sample."""
    starts = torch.nonzero(position_ids == 0).flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    return list(zip(starts, [*starts[1:], int(position_ids.shape[0])]))


def packed_sdpa_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0,
                          scaling: float | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention signature; query/key/value are [batch, heads, length, head_dim]."""
    position_ids = kwargs.get("position_ids")
    if attention_mask is not None or query.shape[2] != key.shape[2] or not getattr(module, "is_causal", True):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    if position_ids is None or kwargs.get("sliding_window") is not None:
        raise ValueError(f"{PACKED_SDPA}: this language model's attention gets no position_ids or uses a sliding "
                         "window, so packed samples cannot be told apart here; set model.attn_implementation "
                         "to flash_attention_2 or eager, or data.batching=modality_grouped (padded batches)")
    gqa = query.shape[1] != key.shape[1]
    width = query.shape[2]
    rows = []
    # `split`, not slicing: a slice's backward writes its gradient into a zeroed full-length tensor, one
    # per sample, per query/key/value and layer (bench-small stage 2: ~5% of the step); split's backward
    # concatenates the samples' gradients once.
    per_row = [t.split(1, dim=0) for t in (query, key, value)]
    for b, spans in enumerate(_spans_per_row(position_ids, query.shape[0])):
        lengths = [e - s for s, e in spans]
        samples = zip(*(rows_of[b].split(lengths, dim=2) for rows_of in per_row))
        parts = [_causal_sample(q, k, v, first_query_row(module, b * width + s, b * width + e) - b * width - s,
                                dropout, scaling, gqa) for (s, e), (q, k, v) in zip(spans, samples)]
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    out = rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def _causal_sample(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, skip: int, dropout: float,
                   scaling: float | None, gqa: bool) -> torch.Tensor:
    """Causal attention of one sample; the first `skip` queries are not needed (`model.last_layer_rows`)
    and get zeros, the others attend as in the full computation (lower-right aligned causal mask)."""
    n = q.shape[2]
    if skip == 0:
        return nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling,
                                                          is_causal=True, enable_gqa=gqa)
    if skip >= n:
        return q.new_zeros(q.shape[:-1] + v.shape[-1:])
    needed = q.split([skip, n - skip], dim=2)[1]
    allowed = torch.arange(n, device=q.device)[None] <= torch.arange(skip, n, device=q.device)[:, None]
    out = nn.functional.scaled_dot_product_attention(needed, k, v, attn_mask=allowed, dropout_p=dropout,
                                                     scale=scaling, enable_gqa=gqa)
    return torch.cat([out.new_zeros(*out.shape[:2], skip, out.shape[-1]), out], dim=2)


_last_spans: tuple[torch.Tensor, list[list[tuple[int, int]]]] | None = None


def _spans_per_row(position_ids: torch.Tensor, batch: int) -> list[list[tuple[int, int]]]:
    """Spans of every row; every layer of a forward gets the same `position_ids` tensor, so they are
    read to the host once per forward (one device sync on GPU), not once per layer. Assumes, as
    transformers and llava15's collator do, that a `position_ids` tensor is never changed in place."""
    global _last_spans
    if _last_spans is None or _last_spans[0] is not position_ids:
        _last_spans = (position_ids, [sample_spans(row) for row in position_ids.expand(batch, -1).cpu()])
    return _last_spans[1]


AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)


def use_packed_attention(model: nn.Module) -> bool:
    """Switch the language model of a LLaVA model from `sdpa` to `PACKED_SDPA`; False when it is not on
    `sdpa` (eager, flash-attention and flex keep their own handling of packed rows)."""
    text = model.config.get_text_config()
    if getattr(text, "_attn_implementation", None) != "sdpa":
        return False
    _set_text_attention(model, PACKED_SDPA)
    return True


def _set_text_attention(model: nn.Module, name: str) -> None:
    vision = getattr(model.config, "vision_config", None)
    model.set_attn_implementation({"text_config": name, "vision_config": vision._attn_implementation,
                                   "": model.config._attn_implementation} if vision is not None else name)
