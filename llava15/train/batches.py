"""Which samples go into which micro-batch of which optimizer step, on which rank.

The global batch (samples per optimizer step) is fixed by the recipe whatever the device count:
`grad_accum = global_batch / (micro_batch × world_size)`. Epoch `e` has an order of all sample indices
(a seeded permutation, or the original modality-grouped order) padded to a multiple of the global
batch by wrapping around to its start (as accelerate's `even_batches`: every step is full and every
rank runs the same number of micro-batches). Step `s` takes the next `global_batch` entries of that
order: which samples an optimizer step sees depends only on (seed, epoch, step), never on the device
count, so a run resumed on another number of devices continues with exactly the samples the
interrupted one had not seen (`samples_consumed` is the global data position).

How a step's samples are dealt into its `world_size × grad_accum` micro-batches:
- without lengths, chunk `j` (of `micro_batch` consecutive samples) goes to rank `j % world_size` as
  its micro-batch `j // world_size`, the way the original deals per-device batches to ranks;
- with `lengths` (token counts, `token_balance`), every micro-batch still gets exactly `micro_batch`
  samples — the same optimizer-visible samples per step on every rank — but the longest sample goes
  first to the micro-batch with the fewest tokens so far (greedy, ties by position): ranks finish
  their forward passes together instead of waiting for the one that drew the long samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

OrderFn = Callable[[int], Sequence[int]]


def random_order(num_samples: int, seed: int) -> OrderFn:
    """A fresh seeded permutation per epoch (independent of the global RNG)."""
    def order(epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        return torch.randperm(num_samples, generator=gen).tolist()
    return order


def balanced_bins(samples: Sequence[int], lengths: Sequence[int], bins: int, size: int) -> list[list[int]]:
    """`samples` dealt into `bins` bins of exactly `size`, balancing the bins' summed lengths (greedy,
    longest first; ties keep the earlier sample first and the lower bin). Each bin keeps step order."""
    position = {s: k for k, s in enumerate(samples)}
    out: list[list[int]] = [[] for _ in range(bins)]
    tokens = [0] * bins
    for s in sorted(samples, key=lambda x: (-lengths[x], position[x])):
        b = min((b for b in range(bins) if len(out[b]) < size), key=lambda b: (tokens[b], b))
        out[b].append(s)
        tokens[b] += lengths[s]
    return [sorted(b, key=position.__getitem__) for b in out]


class BatchPlan:
    def __init__(self, num_samples: int, global_batch: int, micro_batch: int, world_size: int,
                 order: OrderFn, epochs: float = 1.0, max_steps: int = 0,
                 lengths: Sequence[int] | None = None):
        if num_samples <= 0:
            raise ValueError("the training set is empty: nothing to train on")
        per_step = micro_batch * world_size
        if global_batch % per_step:
            raise ValueError(f"train.global_batch_size ({global_batch}) is not a multiple of "
                             f"train.micro_batch_size ({micro_batch}) × devices ({world_size}) = {per_step}")
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.micro_batch = micro_batch
        self.world_size = world_size
        self.grad_accum = global_batch // per_step
        self.steps_per_epoch = math.ceil(num_samples / global_batch)
        self.total_steps = max_steps or max(1, math.ceil(epochs * self.steps_per_epoch))
        self.lengths = lengths
        self._order = order
        self._cache: tuple[int, list[int]] | None = None

    def describe(self) -> str:
        balance = "; micro-batches balanced by tokens" if self.lengths is not None else ""
        return (f"global batch {self.global_batch} = {self.micro_batch} per micro-batch × "
                f"{self.world_size} device(s) × {self.grad_accum} accumulation step(s); "
                f"{self.steps_per_epoch} steps per epoch of {self.num_samples} samples; "
                f"{self.total_steps} optimizer steps in all{balance}")

    def epoch_order(self, epoch: int) -> list[int]:
        if self._cache is None or self._cache[0] != epoch:
            order = list(self._order(epoch))
            if sorted(order) != list(range(self.num_samples)):
                raise ValueError(f"epoch {epoch}: the sample order is not a permutation of "
                                 f"{self.num_samples} indices")
            need = self.steps_per_epoch * self.global_batch
            while len(order) < need:
                order += order[:need - len(order)]
            self._cache = (epoch, order)
        return self._cache[1]

    def step_samples(self, step: int) -> list[int]:
        """The sample indices of optimizer step `step` (0-based), all ranks together."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        return self.epoch_order(epoch)[pos * self.global_batch:(pos + 1) * self.global_batch]

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        """The sample indices of each of `rank`'s micro-batches for optimizer step `step` (0-based)."""
        chunk = self.step_samples(step)
        n_bins = self.world_size * self.grad_accum
        if self.lengths is None:
            bins = [chunk[i:i + self.micro_batch] for i in range(0, len(chunk), self.micro_batch)]
        else:
            bins = balanced_bins(chunk, self.lengths, n_bins, self.micro_batch)
        return bins[rank::self.world_size]

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    def samples_consumed(self, step: int) -> int:
        """The global data position after `step` optimizer steps."""
        return step * self.global_batch
