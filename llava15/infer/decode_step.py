"""Decode steps of the engine: language model + lm_head on a preallocated StaticCache.

Contract:
- `DecodeStep(engine, batch, total)` owns a StaticCache of `total` slots and the step's inputs.
  `step.start(valid, positions, slot)` sets up a run before its prefill (`valid [B, T]` bool: the
  prompts' real cache slots; `positions [B, 1]`: each row's next position id; `slot`: the first slot
  after the left-padded prompts) and empties the cache if an earlier run used it; the prefill writes
  into `step.cache`. `step(token [B, 1]) -> logits [B, V]` marks the next slot valid for every row,
  runs the language model on `token` and advances the positions. The returned logits may be
  overwritten by the next step. `step.greedy(token) -> list[int]` is the same step returning the
  argmax per row instead.
- Every input of a step (attention mask, positions, cache) is a tensor updated in place, which is what
  lets `cuda_graphs=True` replay the step as one CUDA graph (GPU only).
- `StepPool(engine).take(batch, total)` (a context manager) hands out a step for one run. With
  `cuda_graphs=True` or `compile_decode=True` it keeps the last step and hands it to the next run of
  the same batch size and cache length, captured graph included: capturing costs ~70 ms for a 7B model
  on an H100, as much as eight decode steps (on CPU the step is kept too, which only saves the
  allocation). At most one step is kept (its cache stays allocated until a run of another shape
  replaces it), and a step is never handed to two unfinished runs.

Why these choices (bench-small, 1-thread CPU decode step ~22 ms):
- The mask is additive (0 / dtype-min, [B, 1, 1, T]) rather than boolean: sdpa would convert a boolean
  mask to this form in every layer of every step, and eager attention needs it anyway.
- The language model and the lm_head are called directly: no image can occur in a decode step, and the
  LLaVA wrapper's per-call work is a measurable share of a small model's step.
- The lm_head goes through `DecodeHead` (a re-laid-out weight copy on CPU; see lm_head.py).
- `compile_decode` (the engine's option): `hidden` runs through one `torch.compile`d function shared by
  all steps; dynamo keeps one graph per shape (batch, cache length) and guards the rest. On a 2-core
  Xeon (AMX) it took bench-small's batch-1 step from 8.6-10.7 to 6.0-7.7 ms: the step's small operations
  (RMSNorm, rotary, reshapes, cache writes) fuse; the matmuls and attention are the same kernels.
- `greedy_ahead` (the engine's lookahead): a greedy batch's next step is launched from the on-device
  argmax before the host reads the tokens; on a GPU the per-step host work (token copy, streaming,
  stop checks) then overlaps the next step instead of leaving the GPU idle. On an H100 (7B, bf16,
  CUDA graphs) that took a step from ~8.5 to ~8.2 ms: the graph's own kernels are the bound there.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from transformers import StaticCache

from llava15.infer.cuda_graph import DecodeGraph


class DecodeStep:
    def __init__(self, engine, batch: int, total: int) -> None:
        self.lm, self.head, self.cache_kw = engine._lm, engine._head, engine._cache_kw
        self.shape = (batch, total)
        self.cache = StaticCache(config=engine.model.config, max_cache_len=total)
        self.mask = torch.zeros((batch, 1, 1, total), dtype=engine.dtype, device=engine.device)
        self.positions = torch.zeros((batch, 1), dtype=torch.long, device=engine.device)
        self.slot = 0
        self.use_graph = engine.cuda_graphs and engine.device.type == "cuda"
        self.graph: DecodeGraph | None = None
        self._host: torch.Tensor | None = None  # pinned landing buffer for the lookahead's tokens (CUDA)
        self.in_use = self.used = False
        self.compiled = engine.compile_decode

    def start(self, valid: torch.Tensor, positions: torch.Tensor, slot: int) -> None:
        if self.used:
            self.cache.reset()  # zeroes in place: a captured graph still points at the same tensors
        self.used = True
        self.mask.zero_().masked_fill_(~valid[:, None, None, :], torch.finfo(self.mask.dtype).min)
        self.positions.copy_(positions)
        self.slot = slot

    def __call__(self, token: torch.Tensor) -> torch.Tensor:
        self._next_slot()
        if self.use_graph:
            if self.graph is None:  # the graph reads `mask`, `positions` and `cache` in place: never rebound
                self.graph = DecodeGraph(functools.partial(self.run, mask=self.mask, positions=self.positions),
                                         token, self.cache)
            logits = self.graph(token)
        else:
            logits = self.run(token, self.mask, self.positions)
        self.positions += 1
        return logits

    def greedy(self, token: torch.Tensor) -> list[int]:
        """The step's greedy tokens, for batches that need nothing else from the logits."""
        return self(token).argmax(-1).tolist()

    def _next_slot(self) -> None:
        self.mask[:, :, :, self.slot] = 0
        self.slot += 1

    def greedy_ahead(self, logits: torch.Tensor, launch: bool) -> tuple[list[int], torch.Tensor | None]:
        """The greedy tokens of `logits [B, V]` as a list, and, when `launch`, the next step's logits computed
        from the on-device tokens. On CUDA the tokens' copy to the host is queued before the next step,
        which is launched before the host waits for that copy: the GPU runs step n+1 while the host
        streams token n (transformers' `DeferredStopCheck` does the same for its stop check on MPS)."""
        token = logits.argmax(-1, keepdim=True)
        ready = None
        if token.device.type == "cuda":
            if self._host is None:
                self._host = torch.empty(token.shape, dtype=token.dtype, pin_memory=True)
            self._host.copy_(token, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
        following = self(token) if launch else None
        if ready is not None:
            ready.synchronize()
        return (token if ready is None else self._host)[:, 0].tolist(), following

    def run(self, token: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(token, mask, positions))

    def hidden(self, token: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The language model's last hidden state [B, H] for `token`."""
        if self.compiled:
            return _compiled_hidden()(self, token, mask, positions)
        return self.eager_hidden(token, mask, positions)

    def eager_hidden(self, token: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        hidden = self.lm(input_ids=token, attention_mask=mask, position_ids=positions, use_cache=True,
                         **{self.cache_kw: self.cache}).last_hidden_state
        return hidden[:, -1, :]


@functools.cache
def _compiled_hidden():
    return torch.compile(DecodeStep.eager_hidden, dynamic=False)


class StepPool:
    def __init__(self, engine) -> None:
        self.engine = engine
        self.kept: DecodeStep | None = None

    @contextlib.contextmanager
    def take(self, batch: int, total: int) -> Iterator[DecodeStep]:
        step = self.kept
        if step is None or step.in_use or step.shape != (batch, total):
            if step is not None and not step.in_use:
                self.kept = step = None  # free its cache before allocating the new one
            step = DecodeStep(self.engine, batch, total)
            if self.engine.cuda_graphs or self.engine.compile_decode:  # on CPU: saves the allocation
                self.kept = step
        step.in_use = True
        try:
            yield step
        finally:
            step.in_use = False
