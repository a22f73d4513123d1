"""Attention for packed training rows: each sample attends to itself only, at the cost of its own length.

A packed row holds several samples with `position_ids` restarting at 0 for each and no attention mask
(`llava15.data.packing`). transformers isolates such samples under `sdpa` by building a block-diagonal
causal mask over the whole row, and SDPA then computes every block of it: a row of total length L costs
L² per layer whatever its samples. Here each sample costs its own length squared.

The sample boundaries travel with the batch, not through module state: `packed_rows(position_ids,
labels=None)` (host tensors), or `from_batch(batch, ...)` for a batch `data.packing` collated, gives a
`PackedRows` — the samples' lengths as host integers, and their offsets as a tensor moved to the
device with the batch — which the caller passes to
the model's forward as the keyword `llava15_packed`; transformers hands forward keywords down to the
attention function (`TransformersKwargs`). So the forward reads nothing back from the device (no host
sync; one decoder layer compiles with `fullgraph=True`) and nothing is cached between calls.

Two ways to compute it, chosen by the query's device:
- CUDA with `torch.nn.attention.varlen.varlen_attn` (FlashAttention varlen, PyTorch's own): one kernel
  per layer over the whole batch, causal (`window_size=(-1, 0)`).
- otherwise causal SDPA on each sample's span (`split`, not slicing: a slice's backward writes a zeroed
  full-length gradient per sample; split's backward concatenates once).

`PACKED_SDPA` is registered with transformers' `AttentionInterface` (a public extension point; nothing
in transformers is changed). The training runner switches the language model to it for `data.batching:
pack`, whose batches carry no attention mask (transformers builds no mask for a registered attention
without a mask function, so a padded batch must not use it). With `labels`, `PackedRows` also says, per
sample, how many leading query rows the loss never reads (`model.last_layer_rows`): the last decoder
layer computes only the others, with a lower-right causal mask, and returns zeros for the rest.
Measured (bench-small stage 2, 8 samples in one row of 5,893 tokens, 2-core CPU): 4.9 M query-key
pairs instead of 34.7 M; one row per micro-batch made the step 6.7 s → 4.0 s (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

PACKED_SDPA = "llava15_packed_sdpa"
KWARG = "llava15_packed"


@dataclass(frozen=True)
class PackedRows:
    """Sample boundaries of a packed batch (see module docstring)."""

    lengths: tuple[tuple[int, ...], ...]  # per row, the samples' lengths (host)
    query_skip: tuple[tuple[int, ...], ...] | None = None  # per row and sample: leading queries not needed
    cu_seqlens: torch.Tensor | None = None  # int32 offsets of every sample in the flattened batch (varlen)
    max_length: int = 0

    def to(self, device: torch.device) -> PackedRows:
        if self.cu_seqlens is None:
            return self
        return PackedRows(self.lengths, self.query_skip, self.cu_seqlens.to(device, non_blocking=True),
                          self.max_length)


def packed_rows(position_ids: torch.Tensor, labels: torch.Tensor | None = None) -> PackedRows:
    """`PackedRows` of a host batch of positions (and labels, for the last layer's query rows)."""
    from llava15.data.packing import boundaries

    b = boundaries(position_ids, labels if labels is not None else torch.full_like(position_ids, -100))
    return PackedRows(b["sample_lengths"], b["query_skip"] if labels is not None else None, b["cu_seqlens"],
                      b["max_length"])


def from_batch(batch: dict, last_layer_rows: bool) -> PackedRows:
    """`PackedRows` from a collated packed batch (`data.packing.pack_rows` built the boundaries)."""
    return PackedRows(batch["sample_lengths"], batch["query_skip"] if last_layer_rows else None,
                      batch["cu_seqlens"], batch["max_length"])


def _is_last_layer(module: nn.Module) -> bool:
    config = getattr(module, "config", None)
    return getattr(module, "layer_idx", None) == getattr(config, "num_hidden_layers", 0) - 1


def packed_sdpa_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0,
                          scaling: float | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention signature; query/key/value are [batch, heads, length, head_dim]."""
    packed: PackedRows | None = kwargs.get(KWARG)
    if attention_mask is not None or query.shape[2] != key.shape[2] or not getattr(module, "is_causal", True):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    if packed is None or kwargs.get("sliding_window") is not None:
        raise ValueError(f"{PACKED_SDPA}: the forward got no `{KWARG}` (sample boundaries from "
                         "`model.packed_attention.packed_rows`) or this model uses a sliding window; set "
                         "model.attn_implementation to flash_attention_2 or eager, or data.batching=modality_grouped (padded batches)")
    skip = packed.query_skip if packed.query_skip is not None and _is_last_layer(module) else None
    gqa = query.shape[1] != key.shape[1]
    if query.is_cuda and dropout == 0.0 and _varlen() is not None:
        out = _varlen_attention(query, key, value, packed, skip, scaling, gqa)
    else:
        out = _split_attention(query, key, value, packed, skip, dropout, scaling, gqa)
    return out.transpose(1, 2).contiguous(), None


def _split_attention(query, key, value, packed: PackedRows, skip, dropout: float, scaling, gqa: bool):
    rows = []
    per_row = [t.split(1, dim=0) for t in (query, key, value)]
    for b, lengths in enumerate(packed.lengths):
        samples = zip(*(rows_of[b].split(list(lengths), dim=2) for rows_of in per_row))
        row_skip = skip[b] if skip is not None else (0,) * len(lengths)
        parts = [_causal_sample(q, k, v, s, dropout, scaling, gqa) for (q, k, v), s in zip(samples, row_skip)]
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    return rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)


def _causal_sample(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, skip: int, dropout: float,
                   scaling: float | None, gqa: bool) -> torch.Tensor:
    """Causal attention of one sample; the first `skip` queries are not needed and get zeros, the others
    attend as in the full computation (lower-right aligned causal mask)."""
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


def _varlen():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def _varlen_attention(query, key, value, packed: PackedRows, skip, scaling, gqa: bool):
    """All samples of the batch in one FlashAttention varlen call (CUDA). Queries a sample does not need
    (`skip`) are left out of the call (a shorter query range, bottom-right aligned) and returned as zeros."""
    b, h, t, d = query.shape
    q, k, v = (x.transpose(1, 2).reshape(b * t, x.shape[1], d) for x in (query, key, value))
    cu = packed.cu_seqlens
    if skip is None:
        out = _varlen()(q, k, v, cu, cu, packed.max_length, packed.max_length, scale=scaling,
                        window_size=(-1, 0), enable_gqa=gqa)
    else:
        flat_skip = [s for row in skip for s in row]
        flat_len = [n for row in packed.lengths for n in row]
        starts = [0]
        for n in flat_len[:-1]:
            starts.append(starts[-1] + n)
        keep = torch.cat([torch.arange(s + k_, s + n) for s, n, k_ in zip(starts, flat_len, flat_skip)])
        kept = [n - min(s, n) for n, s in zip(flat_len, flat_skip)]
        cu_q = torch.zeros(len(kept) + 1, dtype=torch.int32)
        cu_q[1:] = torch.cumsum(torch.tensor(kept, dtype=torch.int32), 0)
        keep, cu_q = keep.to(q.device, non_blocking=True), cu_q.to(q.device, non_blocking=True)
        part = _varlen()(q.index_select(0, keep), k, v, cu_q, cu, max(kept), packed.max_length, scale=scaling,
                         window_size=(-1, 0), enable_gqa=gqa)
        out = part.new_zeros(b * t, h, d).index_copy(0, keep, part)
    return out.reshape(b, t, h, d).transpose(1, 2)


AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)


def use_packed_attention(model: nn.Module) -> bool:
    """Switch the language model of a LLaVA model from `sdpa` to `PACKED_SDPA`; False when it is not on
    `sdpa` (eager, flash-attention and flex keep their own handling of packed rows)."""
    if uses_packed_attention(model):
        return True
    text = model.config.get_text_config()
    if getattr(text, "_attn_implementation", None) != "sdpa":
        return False
    vision = getattr(model.config, "vision_config", None)
    model.set_attn_implementation({"text_config": PACKED_SDPA, "vision_config": vision._attn_implementation,
                                   "": model.config._attn_implementation} if vision is not None else PACKED_SDPA)
    return True


def uses_packed_attention(model: nn.Module) -> bool:
    """Does the language model isolate packed samples itself (so a micro-batch may be one unpadded row)?"""
    return getattr(model.config.get_text_config(), "_attn_implementation", None) == PACKED_SDPA
