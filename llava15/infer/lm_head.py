"""The decode step's lm_head on CPU: the same `nn.Linear`, computed from re-laid-out copies of its weight.

Contract:
- `DecodeHead(head)(hidden [B, H]) -> logits [B, V]` equals `head(hidden)` up to float rounding.
- `DecodeHead(head).greedy(hidden [B, H]) -> list[int]`: the argmax of those logits per row (the first
  index among equal maxima, as `argmax`), for rows that need nothing else (greedy, no JSON).
- On CPU in fp32, one row's logits use a contiguous transposed copy of the weight (`hidden @ W^T` as a
  plain row-by-matrix product) and several rows' a oneDNN-packed copy
  (`torch.ops.mkldnn._reorder_linear_weight`, the layout inductor itself uses for packed linears).
- One greedy row has three ways to its token (`GREEDY_PATHS`): the fp32 logits above and their argmax
  (`fp32`), or a screen: every token is scored from a bf16 copy of the weight, only the tokens whose score
  could be the fp32 maximum under a bound on the bf16 rounding error are recomputed in fp32 from the
  weight itself, and the best of those is the token (more than `MAX_CANDIDATES` candidates, as for
  near-uniform logits: the plain fp32 product). The screen's bf16 product runs against a [H, V] copy
  (`screen_cols`, a row-by-matrix product) or a [V, H] copy (`screen_rows`, a matrix-by-vector product).
  All three give the same token; which is fastest depends on the CPU, so the first
  `(1 + TRIALS) * len(GREEDY_PATHS)` greedy rows take the paths in turn, timed, and every later row takes
  the one with the lowest median time (its copies are kept, the others' freed). `greedy_path=` fixes a path.
- Each copy is made on first use and remade whenever the parameter is replaced or updated in place (its
  storage or version counter changes, e.g. an optimizer step between two evaluations). Elsewhere (GPU,
  other dtypes, a head that is not a plain `nn.Linear`) `head` itself computes the logits.

Why: the lm_head is the largest matrix of a small model and the heaviest part of a decode step (66 MB
read per step for bench-small). MKL's fp32 GEMM against the transposed [V, H] weight is slow for a few
rows on some CPUs (1-thread Xeon without AMX, V=32064, H=512: 1 row ~7.4 ms, 8 rows ~25 ms, 16 rows
~19 ms); there the transposed copy streams at memory bandwidth for one row (~5.8 ms), the packed one
takes 7-10 ms for 2 to 16 rows, and the bf16 screen against [H, V] reads half the bytes (~4.3 ms for
one greedy row, ~10 candidates on bench-small). On a 2-core Xeon with AMX and avx512_bf16 the order is
reversed: fp32 ~1.9 ms, bf16 against [H, V] ~3.0 ms, against [V, H] ~1.4 ms; hence the measurement.
The cost is memory: one extra copy of the weight per path used (66 MB fp32 or 33 MB bf16 for
bench-small), all three while the paths are being timed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

MAX_CANDIDATES = 256
GREEDY_PATHS = ("fp32", "screen_rows", "screen_cols")
TRIALS = 3  # timed calls per greedy path, after one untimed call that makes its copies
_U_BF16 = 2.0 ** -8  # unit roundoff of bfloat16 (8 significant bits)
COPIES_OF_PATH = {"fp32": ("transposed",), "screen_rows": ("bf16_rows", "norms"),
                  "screen_cols": ("bf16_cols", "norms")}


def _cpu_fp32(weight: torch.Tensor) -> bool:
    return weight.device.type == "cpu" and weight.dtype == torch.float32


class DecodeHead:
    def __init__(self, head: nn.Linear, greedy_path: str | None = None) -> None:
        if greedy_path is not None and greedy_path not in GREEDY_PATHS:
            raise ValueError(f"greedy_path must be one of {GREEDY_PATHS}, not {greedy_path!r}")
        self.head = head
        self._copies: dict[str, tuple[tuple[int, int], torch.Tensor]] = {}  # copy -> (weight key, copy)
        self._packed_ok = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        self.greedy_path = greedy_path  # None until the timed trials have chosen
        self._timings: dict[str, list[float]] = {p: [] for p in GREEDY_PATHS}
        self._trial = 0

    def _copy(self, name: str, make: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        w = self.head.weight
        key = (w.data_ptr(), w._version)
        if name not in self._copies or self._copies[name][0] != key:
            self._copies.pop(name, None)  # free the stale copy before making the new one
            self._copies[name] = (key, make(w.detach()))
        return self._copies[name][1]

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
        if self.greedy_path is not None:
            return [self._greedy_one(self.greedy_path, hidden)]
        path = GREEDY_PATHS[self._trial % len(GREEDY_PATHS)]
        start = time.perf_counter()
        token = self._greedy_one(path, hidden)
        if self._trial >= len(GREEDY_PATHS):  # each path's first call makes its copies: not timed
            self._timings[path].append(time.perf_counter() - start)
        self._trial += 1
        if self._trial == (1 + TRIALS) * len(GREEDY_PATHS):
            self._choose(min(GREEDY_PATHS, key=lambda p: statistics.median(self._timings[p])))
        return [token]

    def _choose(self, path: str) -> None:
        self.greedy_path = path
        unused = {c for p in GREEDY_PATHS for c in COPIES_OF_PATH[p]} - set(COPIES_OF_PATH[path])
        for name in unused:
            self._copies.pop(name, None)

    def _greedy_one(self, path: str, hidden: torch.Tensor) -> int:
        if path == "fp32":
            return int(self(hidden).argmax())
        x = hidden[0]
        x16 = x.to(torch.bfloat16)
        if path == "screen_rows":
            approx = torch.mv(self._copy("bf16_rows", lambda w: w.to(torch.bfloat16)), x16).float()  # [V, H]
        else:
            w16 = self._copy("bf16_cols", lambda w: w.t().contiguous().to(torch.bfloat16))  # [H, V]
            approx = (x16[None] @ w16)[0].float()
        return self._screened_argmax(x, approx)

    def _screened_argmax(self, x: torch.Tensor, approx: torch.Tensor) -> int:
        w = self.head.weight.detach()
        norms = self._copy("norms", lambda w: torch.linalg.vector_norm(w, dim=1))  # [V]
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
