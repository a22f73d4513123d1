"""One decode step captured as a CUDA graph (opt-in: `Engine(bundle, cuda_graphs=True)`).

Contract: `DecodeGraph(step, token, cache)` runs `step(token)` once on a side stream (lazy CUDA
initialisations must not happen during capture), rolls the static KV cache back by that one token,
and captures `step` on a static copy of `token`. `graph(token)` copies the new token in and replays:
one launch instead of hundreds of kernel launches, which is what bounds batch-1 decode of an eager
7B model on a fast GPU. Everything else `step` reads (position ids, the 4-D attention mask, the cache)
must be tensors updated in place between calls, never replaced. The returned logits tensor is
overwritten by the next replay.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class DecodeGraph:
    def __init__(self, step: Callable[[torch.Tensor], torch.Tensor], token: torch.Tensor, cache) -> None:
        self.token = token.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step(self.token)
        torch.cuda.current_stream().wait_stream(side)
        # The warm-up wrote this token's keys/values and advanced the cache; the first replay rewrites
        # the same slot, so only the length has to go back.
        cache.crop(-1)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = step(self.token)

    def __call__(self, token: torch.Tensor) -> torch.Tensor:
        self.token.copy_(token)
        self.graph.replay()
        return self.logits
