"""Packing: several samples per row of a token budget, with no attention across samples.

`plan_rows(lengths, budget)` assigns samples to rows (first-fit decreasing, ties by index, so the same
lengths always give the same rows). `pack_rows(samples, rows, pad_token_id)` concatenates each row's
`input_ids`/`labels` and writes `position_ids` restarting at 0 for every sample. The model must then be
called with `position_ids`, NO `attention_mask` and `use_cache=False` (or
`text_config.use_cache=False`): transformers detects the sample boundaries from the position resets
only then; with a KV cache or any attention mask the samples silently attend to each other
(transformers' packed-sequence detection). Padding at a row's end is one more "sample" (positions from 0, labels -100).
Each sample's first label must be -100 (BOS), so no sample learns to predict the next one's start.

`pack_rows` also describes the boundaries for attention that isolates samples itself
(`model.packed_attention`), so the forward never reads them back from the device: `sample_lengths`
(per row, the lengths of its samples, the trailing padding counted as one more), `cu_seqlens` (their
int32 offsets in the flattened batch), `max_length`, and `query_skip` (per sample, how many leading
positions have no supervised next token: rows the loss never reads).
"""

from __future__ import annotations

import torch

from llava15.data.conversation import IGNORE_INDEX


def plan_rows(lengths: list[int], budget: int) -> list[list[int]]:
    """Sample indices per row, each row's total length <= budget (first-fit decreasing)."""
    too_long = [(i, n) for i, n in enumerate(lengths) if n > budget]
    if too_long:
        i, n = too_long[0]
        raise ValueError(f"sample {i} has {n} tokens, more than the packing budget {budget}; "
                         "raise pack_tokens or lower model_max_length")
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        slot = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            rows.append([i])
            room.append(budget - lengths[i])
        else:
            rows[slot].append(i)
            room[slot] -= lengths[i]
    return [sorted(row) for row in rows]


def pack_rows(ids: list[torch.Tensor], labels: list[torch.Tensor], rows: list[list[int]], pad_token_id: int,
              row_length: int | None = None) -> dict[str, torch.Tensor]:
    """`input_ids`, `labels`, `position_ids` of shape [rows, row_length] (longest row when None)."""
    width = row_length or max(sum(len(ids[i]) for i in row) for row in rows)
    out_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    out_labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            n = len(ids[i])
            out_ids[r, at:at + n] = ids[i]
            out_labels[r, at:at + n] = labels[i]
            positions[r, at:at + n] = torch.arange(n)
            at += n
        if at > width:
            raise ValueError(f"row {r} holds {at} tokens, more than the row length {width}")
        positions[r, at:] = torch.arange(width - at)
    return {"input_ids": out_ids, "labels": out_labels, "position_ids": positions,
            **boundaries(positions, out_labels)}


def boundaries(position_ids: torch.Tensor, labels: torch.Tensor) -> dict:
    """`sample_lengths`, `query_skip`, `cu_seqlens`, `max_length` of a packed batch (module docstring)."""
    needed = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX) != IGNORE_INDEX
    lengths, skip = [], []
    for pos, row in zip(position_ids, needed):
        starts = torch.nonzero(pos == 0).flatten().tolist()
        if not starts or starts[0] != 0:
            starts = [0, *starts]
        ends = [*starts[1:], int(pos.shape[0])]
        lengths.append(tuple(e - s for s, e in zip(starts, ends)))
        first = torch.nonzero(row).flatten().tolist()
        skip.append(tuple(next((i - s for i in first if s <= i < e), e - s) for s, e in zip(starts, ends)))
    flat = [n for row in lengths for n in row]
    cu = torch.zeros(len(flat) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(flat, dtype=torch.int32), 0)
    return {"sample_lengths": tuple(lengths), "query_skip": tuple(skip), "cu_seqlens": cu, "max_length": max(flat)}
