"""The decode step's lm_head on CPU: the same `nn.Linear`, computed from a re-laid-out copy of its weight.

Contract: `DecodeHead(head)(hidden [B, H]) -> logits [B, V]` equals `head(hidden)` up to float rounding.
On CPU in fp32, one row uses a contiguous transposed copy of the weight (`hidden @ W^T` as a plain
row-by-matrix product) and several rows a oneDNN-packed copy (`torch.ops.mkldnn._reorder_linear_weight`,
the layout inductor itself uses for packed linears; a torch build without that op falls back to the
plain linear). A copy is made on first use and remade whenever the parameter is replaced or updated in
place (its storage or version counter changes, e.g. an optimizer step between two evaluations).
Elsewhere (GPU, other dtypes, a head that is not a plain `nn.Linear`) `head` itself computes the logits.

Why: the lm_head is the largest matrix of a small model and the heaviest part of a decode step (66 MB
per step for bench-small, V=32064, H=512), and MKL's fp32 GEMM against the [V, H] weight is slow for a
few rows. Measured on a 2-core AMD EPYC (avx512_bf16, 2 threads, 2026-12-06): one row 8.2 ms plain →
3.2 ms transposed; 8 rows 13.8 ms plain → 2.6 ms packed; 16 rows 17.0 → 3.4 ms. Cost: one extra copy
of the weight (66 MB fp32 for bench-small).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class DecodeHead:
    def __init__(self, head: nn.Linear) -> None:
        self.head = head
        self._copies: dict[str, tuple[tuple[int, int], torch.Tensor]] = {}  # copy -> (weight key, copy)
        self._packed_ok = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")

    def _copy(self, name: str, make: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        w = self.head.weight
        key = (w.data_ptr(), w._version)
        if name not in self._copies or self._copies[name][0] != key:
            self._copies.pop(name, None)  # free the stale copy before making the new one
            self._copies[name] = (key, make(w.detach()))
        return self._copies[name][1]

    def _plain(self, hidden: torch.Tensor) -> bool:
        w = self.head.weight
        return (type(self.head) is not nn.Linear  # a wrapped or quantized head computes itself
                or w.device.type != "cpu" or w.dtype != torch.float32 or hidden.dtype != w.dtype)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        if self._plain(hidden):
            return self.head(hidden)
        bias = self.head.bias
        if hidden.shape[0] == 1:
            wt = self._copy("transposed", lambda w: w.t().contiguous())
            return torch.mm(hidden, wt) if bias is None else torch.addmm(bias, hidden, wt)
        if self._packed_ok:
            try:
                packed = self._copy("packed", lambda w: torch.ops.mkldnn._reorder_linear_weight(w, None))
                return torch.ops.mkldnn._linear_pointwise(hidden.contiguous(), packed, bias, "none", [], "")
            except RuntimeError:  # a torch build without this internal op: plain linear from then on
                self._packed_ok = False
                self._copies.pop("packed", None)
        return self.head(hidden)
