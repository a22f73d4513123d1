"""The original modality-grouped length sampler (`LengthGroupedSampler` with `group_by_modality_length`), rank-aware and resumable.

`modality_grouped_indices(lengths, batch_size, world_size, generator)` returns the same index order
as the original `get_modality_length_grouped_indices` for the same RNG state: the per-modality
shuffles draw from the GLOBAL torch RNG (as the original does), the megabatch order from `generator`
(or the global RNG when None). A megabatch is `batch_size * world_size` indices of one modality,
sorted by length and balanced over ranks; the leftover image and text indices form the last
megabatch, sorted by dataset index. Negative length = text-only; a zero length is refused.

`ModalityGroupedSampler` runs it with the global RNG seeded to `seed + epoch` inside a fork (the
caller's RNG is untouched), cuts the list into per-device batches, hands batch k to rank
`k % num_replicas` (as accelerate does) and can resume mid-epoch from `state_dict()`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch


def split_to_even_chunks(indices: list[int], lengths: Sequence[int], num_chunks: int) -> list[list[int]]:
    """Give each index to the chunk with the smallest length sum; a full chunk takes no more."""
    if len(indices) % num_chunks:
        return [indices[k::num_chunks] for k in range(num_chunks)]
    per_chunk = len(indices) // num_chunks
    chunks: list[list[int]] = [[] for _ in range(num_chunks)]
    sums: list[float] = [0.0] * num_chunks
    for i in indices:
        k = sums.index(min(sums))
        chunks[k].append(i)
        sums[k] += lengths[i]
        if len(chunks[k]) == per_chunk:
            sums[k] = float("inf")
    return chunks


def length_grouped_indices(lengths: Sequence[int], batch_size: int, world_size: int,
                           generator: torch.Generator | None = None) -> list[int]:
    """Random permutation, cut into megabatches, each sorted by length (desc) and balanced over ranks."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    size = world_size * batch_size
    out: list[int] = []
    for start in range(0, len(order), size):
        mega = sorted(order[start:start + size], key=lambda i: lengths[i], reverse=True)
        for chunk in split_to_even_chunks(mega, lengths, world_size):
            out.extend(chunk)
    return out


def modality_grouped_indices(lengths: list[int], batch_size: int, world_size: int,
                             generator: torch.Generator | None = None) -> list[int]:
    """The original's order for `group_by_modality_length` (see module docstring)."""
    if any(v == 0 for v in lengths):
        raise ValueError(f"length 0 at index {lengths.index(0)}: the sampler needs nonzero lengths "
                         "(positive = with image, negative = text-only)")
    if all(v > 0 for v in lengths) or all(v < 0 for v in lengths):
        return length_grouped_indices(lengths, batch_size, world_size, generator)
    image_ids = [i for i, v in enumerate(lengths) if v > 0]
    text_ids = [i for i, v in enumerate(lengths) if v < 0]
    image_order = [image_ids[k] for k in length_grouped_indices(
        [lengths[i] for i in image_ids], batch_size, world_size, None)]
    text_order = [text_ids[k] for k in length_grouped_indices(
        [-lengths[i] for i in text_ids], batch_size, world_size, None)]
    size = world_size * batch_size
    image_megas = [image_order[s:s + size] for s in range(0, len(image_order), size)]
    text_megas = [text_order[s:s + size] for s in range(0, len(text_order), size)]
    leftover = image_megas[-1] + text_megas[-1]
    megas = image_megas[:-1] + text_megas[:-1]
    megas = [megas[k] for k in torch.randperm(len(megas), generator=generator).tolist()]
    if leftover:
        megas.append(sorted(leftover))
    return [i for mega in megas for i in mega]


class ModalityGroupedSampler(torch.utils.data.Sampler[int]):
    """Per-rank indices of the original order; `world_size` in the grouping = replicas × grad_accum."""

    def __init__(self, lengths: list[int], batch_size: int, num_replicas: int = 1, rank: int = 0,
                 grad_accum: int = 1, seed: int = 42, group_by_modality: bool = True) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.lengths, self.batch_size = list(lengths), batch_size
        self.num_replicas, self.rank, self.grad_accum = num_replicas, rank, grad_accum
        self.seed, self.group_by_modality = seed, group_by_modality
        self.epoch, self.consumed = 0, 0

    def global_order(self) -> list[int]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + self.epoch)
            if self.group_by_modality:
                return modality_grouped_indices(self.lengths, self.batch_size,
                                                self.num_replicas * self.grad_accum)
            return torch.randperm(len(self.lengths)).tolist()

    def rank_order(self) -> list[int]:
        order = self.global_order()
        step = self.batch_size * self.num_replicas
        if order and len(order) % step:  # even batches: complete from the start, as accelerate does
            need = step - len(order) % step
            order = order + (order * (need // len(order) + 1))[:need]
        batches = [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        return [i for batch in batches[self.rank::self.num_replicas] for i in batch]

    def __len__(self) -> int:
        step = self.batch_size * self.num_replicas
        return -(-len(self.lengths) // step) * self.batch_size

    def __iter__(self) -> Iterator[int]:
        order = self.rank_order()
        start = self.consumed
        for k in range(start, len(order)):
            self.consumed = k + 1
            yield order[k]
        self.consumed = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.consumed = epoch, 0

    def state_dict(self, consumed: int | None = None) -> dict:
        """`consumed` = samples this rank has trained on (pass it: DataLoader workers prefetch ahead)."""
        return {"epoch": self.epoch, "consumed": self.consumed if consumed is None else consumed,
                "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.consumed, self.seed = state["epoch"], state["consumed"], state.get("seed", self.seed)
