"""Which samples go into which micro-batch of which optimizer step, on which rank.

The global batch (samples per optimizer step) is fixed by the recipe whatever the device count:
`grad_accum = global_batch / (micro_batch × world_size)`. Epoch `e` has an order of all sample indices
(a seeded permutation, or the original modality-grouped order) padded to a multiple of the global
batch by wrapping around to its start (as accelerate's `even_batches`: every step is full and every
rank runs the same number of micro-batches). Step `s` takes the next `global_batch` entries; chunk `j`
(of `micro_batch` samples) goes to rank `j % world_size` as its micro-batch `j // world_size`, the way
the original's per-device batches are dealt to ranks. The plan depends only on (seed, epoch, step), so
a resumed run sees exactly the batches the interrupted one would have.
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


class BatchPlan:
    def __init__(self, num_samples: int, global_batch: int, micro_batch: int, world_size: int,
                 order: OrderFn, epochs: float = 1.0, max_steps: int = 0):
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
        self._order = order
        self._cache: tuple[int, list[int]] | None = None

    def describe(self) -> str:
        return (f"global batch {self.global_batch} = {self.micro_batch} per micro-batch × "
                f"{self.world_size} device(s) × {self.grad_accum} accumulation step(s); "
                f"{self.steps_per_epoch} steps per epoch of {self.num_samples} samples; "
                f"{self.total_steps} optimizer steps in all")

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

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        """The sample indices of each of `rank`'s micro-batches for optimizer step `step` (0-based)."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        chunk = order[pos * self.global_batch:(pos + 1) * self.global_batch]
        chunks = [chunk[i:i + self.micro_batch] for i in range(0, len(chunk), self.micro_batch)]
        return chunks[rank::self.world_size]

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch
