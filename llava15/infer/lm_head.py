"""The decode step's lm_head on CPU: the same `nn.Linear`, computed from re-laid-out copies of its weight.

Contract:
- `DecodeHead(head)(hidden [B, H]) -> logits [B, V]` equals `head(hidden)` up to float rounding.
- `DecodeHead(head).greedy(hidden [B, H]) -> list[int]`: the argmax of those logits per row (the first
  index among equal maxima, as `argmax`), for rows that need nothing else (greedy, no JSON).
- On CPU in fp32, one row's logits use a contiguous transposed copy of the weight (`hidden @ W^T` as a
  plain row-by-matrix product) and several rows' a oneDNN-packed copy
  (`torch.ops.mkldnn._reorder_linear_weight`, the layout inductor itself uses for packed linears). One
  row's greedy token is screened first: every token is scored from a bf16 copy of the weight, only the
  tokens whose score could be the fp32 maximum under a bound on the bf16 rounding error are recomputed
  in fp32 from the weight itself, and the best of those is the token (more than `MAX_CANDIDATES`
  candidates, as for near-uniform logits: the plain fp32 product).
- Each copy is made on first use and remade whenever the parameter is replaced or updated in place (its
  storage or version counter changes, e.g. an optimizer step between two evaluations). Elsewhere (GPU,
  other dtypes, a head that is not a plain `nn.Linear`) `head` itself computes the logits.

Why: the lm_head is the largest matrix of a small model and the heaviest part of a decode step (66 MB
read per step for bench-small). MKL's fp32 GEMM against the transposed [V, H] weight is slow for a few
rows (1-thread Xeon, V=32064, H=512: 1 row ~7.4 ms, 8 rows ~25 ms, 16 rows ~19 ms); the transposed copy
streams at memory bandwidth for one row (~5.8 ms), the packed one takes 7-10 ms for 2 to 16 rows, and
the bf16 screen reads half the bytes (~4.3 ms for one greedy row, ~10 candidates on bench-small). The
cost is memory: one extra copy of the weight per path used (66 MB fp32 or 33 MB bf16 for bench-small).
"""

from __future__ import annotations

import torch
from torch import nn

MAX_CANDIDATES = 256
_U_BF16 = 2.0 ** -8  # unit roundoff of bfloat16 (8 significant bits)


def _cpu_fp32(weight: torch.Tensor) -> bool:
    return weight.device.type == "cpu" and weight.dtype == torch.float32


class DecodeHead:
    def __init__(self, head: nn.Linear) -> None:
        self.head = head
        self._copies: dict[str, tuple[tuple[int, int], torch.Tensor]] = {}  # path -> (weight key, copy)
        self._packed_ok = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")

    def _copy(self, path: str, make) -> torch.Tensor:
        w = self.head.weight
        key = (w.data_ptr(), w._version)
        if path not in self._copies or self._copies[path][0] != key:
            self._copies.pop(path, None)  # free the stale copy before making the new one
            self._copies[path] = (key, make(w.detach()))
        return self._copies[path][1]

    def _plain(self, hidden: torch.Tensor) -> bool:
        return (type(self.head) is not nn.Linear  # a wrapped or quantized head computes itself
                or not _cpu_fp32(self.head.weight) or hidden.dtype != self.head.weight.dtype)

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

    def greedy(self, hidden: torch.Tensor) -> list[int]:
        if hidden.shape[0] != 1 or self.head.bias is not None or self._plain(hidden):
            return self(hidden).argmax(-1).tolist()
        return [self._screened_argmax(hidden[0])]

    def _screened_argmax(self, x: torch.Tensor) -> int:
        w = self.head.weight.detach()
        w16 = self._copy("bf16", lambda w: w.t().contiguous().to(torch.bfloat16))  # [H, V]
        norms = self._copy("norms", lambda w: torch.linalg.vector_norm(w, dim=1))  # [V]
        approx = (x.to(torch.bfloat16)[None] @ w16)[0].float()
        # |approx - exact| <= (2u + u^2) * sum|x_i w_i| (both operands rounded to bf16; the products and
        # their fp32 sum are exact up to g = K * 2^-24 each) + u * |approx| (the bf16 result), and
        # sum|x_i w_i| <= |x| |w| (Cauchy-Schwarz); the fp32 logits themselves are off by up to g as well.
        # Everything is doubled as a margin.
        u, g = _U_BF16, x.shape[0] * 2.0 ** -24
        bound = 2 * ((2 * u + u * u + 3 * g) * float(torch.linalg.vector_norm(x)) * norms
                     + u / (1 - u) * approx.abs())
        # The fp32 argmax scores at least its exact logit - bound, which is at least any token's - bound.
        candidates = (approx + bound >= (approx - bound).max()).nonzero()[:, 0]
        if not 0 < len(candidates) <= MAX_CANDIDATES:  # near-uniform logits, or NaNs: the plain product
            return int(self.head(x[None]).argmax())
        return int(candidates[(w[candidates] @ x).argmax()])
