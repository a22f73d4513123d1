"""The last decoder layer computed only on the rows whose output reaches the loss.

Training reads the language model's output at supervised positions only: lm_head runs on those rows
(`train/loss.py`). In the last decoder layer the query projection, the attention of each query, the
output projection and the MLP work row by row, and nothing after that layer (final norm, lm_head)
mixes rows, so on every other row their work is dead. Keys and values are still needed on every row:
the supervised queries attend to them. In bench-small's stage-2 batches 13 % of the rows are
supervised; skipping the rest of the last layer's work took the eager CPU step from 3.56 to 3.23 s
(4 layers; a 32-layer Vicuna gains about an eighth of that).

`LastLayerRows(model)` registers forward hooks (PyTorch's public module API) on the last layer's
`q_proj`, `o_proj` and `mlp` (those it has; without an `mlp` it does nothing). While `rows_only(rows)` is
active, each of them runs on those rows only and returns zeros on the others; with packed rows, the
batch's `PackedRows` (built with the labels, `model.packed_attention`) tells the attention which
queries each sample needs, so it computes only those. The loss and every gradient are those of the
full computation (test). The layer's output on the other rows is not the model's (it skips the layer's
update), so this is for training steps only; outside `rows_only` the hooks do nothing. Keep the
context open through the backward pass: activation checkpointing reruns the layer there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def decoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """`language_model.layers` of a LLaVA model (through LoRA and FSDP wrappers), or None."""
    for m in model.modules():
        layers = getattr(getattr(m, "language_model", None), "layers", None)
        if isinstance(layers, nn.ModuleList) and len(layers):
            return layers
    return None


class LastLayerRows:
    def __init__(self, model: nn.Module):
        layers = decoder_layers(model)
        mlp = getattr(layers[-1], "mlp", None) if layers is not None else None
        self.attention = getattr(layers[-1], "self_attn", None) if mlp is not None else None
        self.modules = [m for m in (getattr(self.attention, "q_proj", None), getattr(self.attention, "o_proj", None),
                                    mlp) if isinstance(m, nn.Module)]
        self.rows: torch.Tensor | None = None
        self._shapes: dict[int, torch.Size] = {}
        for m in self.modules:
            m.register_forward_pre_hook(self._select)
            m.register_forward_hook(self._scatter)

    @property
    def enabled(self) -> bool:
        return bool(self.modules)

    def describe(self) -> str:
        names = [type(m).__name__ for m in self.modules]
        return f"last decoder layer on supervised rows only ({', '.join(names)})" if names else \
            "last decoder layer on every row (no `mlp` found in it)"

    @contextlib.contextmanager
    def rows_only(self, rows: torch.Tensor) -> Iterator[None]:
        """Restrict the last layer to `rows` (flat indices over [batch, length], sorted) inside the block."""
        self.rows = rows
        try:
            yield
        finally:
            self.rows = None
            self._shapes.clear()

    def _select(self, module: nn.Module, args: tuple) -> tuple | None:
        if self.rows is None:
            return None
        x = args[0]
        self._shapes[id(module)] = x.shape[:-1]
        # kept 3-D ([1, rows, hidden]): some MLPs (mixture-of-experts) read batch and length from it
        return (x.reshape(-1, x.shape[-1]).index_select(0, self.rows)[None], *args[1:])

    def _scatter(self, module: nn.Module, args: tuple, out):
        if self.rows is None:
            return None
        shape = self._shapes[id(module)]
        first = out[0] if isinstance(out, tuple) else out
        full = first.new_zeros(shape.numel(), first.shape[-1]).index_copy(0, self.rows, first[0])
        full = full.view(*shape, first.shape[-1])
        return (full, *out[1:]) if isinstance(out, tuple) else full
