"""Next-token loss computed only where a label exists.

The lm_head runs on the hidden states of supervised positions only: labels are shifted left by one
(`targets[t] = labels[t+1]`, -100 past the end), the positions whose target is not -100 form a bool
mask, and the model is called with that mask as `logits_to_keep` (transformers slices the hidden
states before `lm_head`, returning `(num_kept, vocab)` logits). Full-vocabulary logits for the ~92% of
positions without a label are never materialised; the loss equals HF's full computation (test).

With packing, the last token of one sample "predicts" the first token of the next; that first token is
always -100 (BOS/prompt are masked), so no cross-sample term enters the loss.

Normalisation (see `loop.py`): this module returns the **sum** of token losses and the token count;
the caller divides.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llava15.data.conversation import IGNORE_INDEX
from llava15.model.packed_attention import KWARG as PACKED_KWARG


def shift_targets(labels: torch.Tensor) -> torch.Tensor:
    """`targets[:, t] = labels[:, t + 1]`; the last column is IGNORE_INDEX."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def supervised_rows(labels: torch.Tensor) -> torch.Tensor:
    """Flat indices (row-major over [batch, length]) of the positions with a supervised next-token target:
    the rows lm_head reads, and the only rows the last decoder layer must compute (`model.last_layer_rows`)."""
    return (shift_targets(labels) != IGNORE_INDEX).reshape(-1).nonzero().squeeze(1)


def supervised_loss_sum(model: nn.Module, batch: dict, packed: Any = None) -> tuple[torch.Tensor, int]:
    """Forward `batch` through the model; return (sum of CE over supervised tokens, their count).

    `batch` holds `input_ids`, `labels` and either `position_ids` (packed, no attention_mask) or
    `attention_mask` (padded), and `pixel_values` (or None). `packed` (`model.packed_attention.PackedRows`)
    gives packed attention the sample boundaries; a packed batch from `data.packing` carries them itself.
    `use_cache=False` always: with a cache object transformers does not detect packed sequences and
    attends across samples.
    """
    targets = shift_targets(batch["labels"])
    keep = targets != IGNORE_INDEX
    inputs = {k: batch[k] for k in ("input_ids", "pixel_values", "attention_mask", "position_ids")
              if batch.get(k) is not None}
    if packed is None and batch.get("sample_lengths") is not None:
        from llava15.model.packed_attention import from_batch

        packed = from_batch(batch, last_layer_rows=False).to(batch["input_ids"].device)
    if packed is not None:
        inputs[PACKED_KWARG] = packed
    out = model(**inputs, use_cache=False, logits_to_keep=keep)
    logits = out.logits
    loss_sum = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
    return loss_sum, int(keep.sum())


def full_vocab_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """Reference: HF's own loss on full logits (mean over supervised tokens). Used by tests/benchmarks."""
    inputs = {k: batch[k] for k in ("input_ids", "pixel_values", "attention_mask", "position_ids")
              if batch.get(k) is not None}
    if batch.get("sample_lengths") is not None:
        from llava15.model.packed_attention import from_batch

        inputs[PACKED_KWARG] = from_batch(batch, last_layer_rows=False).to(batch["input_ids"].device)
    return model(**inputs, labels=batch["labels"], use_cache=False).loss
