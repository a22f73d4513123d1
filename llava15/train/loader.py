"""The one data path of training: a `torch.utils.data.DataLoader` over this rank's planned micro-batches.

Item `k` of `MicroBatches` is this rank's micro-batch `k % grad_accum` of optimizer step
`k // grad_accum` (`train.batches.BatchPlan`): the dataset reads, tokenizes and preprocesses its
samples (image decoding included) and the collator expands, packs and describes them — all inside the
DataLoader's worker processes when `data.num_workers > 0`, with pinned memory on CUDA, prefetching and
persistent workers, so the training loop only moves ready tensors to its device. The loader starts at
any step (`start_step`), which is how a resumed run continues at the exact sample.

A record found bad inside a worker (an unreadable image, too long) is replaced by the next good
record by `data.dataset.LlavaDataset`; the batch lists it under `skipped` (index, reason, message) and
`record_ids`, so the main process counts it, logs it with its record and the run goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from llava15.train.batches import BatchPlan


class MicroBatches(Dataset):
    """Map-style dataset of one rank's collated micro-batches, in plan order."""

    def __init__(self, dataset, plan: BatchPlan, rank: int, collate: Callable[[list[dict]], dict]) -> None:
        self.dataset, self.plan, self.rank, self.collate = dataset, plan, rank, collate

    def __len__(self) -> int:
        return self.plan.total_steps * self.plan.grad_accum

    def __getitem__(self, k: int) -> dict:
        step, m = divmod(k, self.plan.grad_accum)
        indices = self.plan.micro_batches(step, self.rank)[m]
        batch = self.collate([self.dataset[i] for i in indices])
        batch["step"], batch["indices"] = step, indices
        return batch


def step_batches(dataset, plan: BatchPlan, rank: int, collate: Callable, start_step: int, end_step: int,
                 num_workers: int, pin_memory: bool, prefetch_factor: int = 2) -> Iterator[list[dict]]:
    """The micro-batches of steps `start_step`..`end_step - 1`, one list per optimizer step."""
    items = MicroBatches(dataset, plan, rank, collate)
    accum = plan.grad_accum
    kw = {"prefetch_factor": prefetch_factor, "persistent_workers": True} if num_workers > 0 else {}
    # its own generator: creating the iterator must not draw from the global RNG (a resumed run would
    # then diverge from the uninterrupted one)
    loader = DataLoader(items, batch_size=None, sampler=range(start_step * accum, end_step * accum),
                        num_workers=num_workers, pin_memory=pin_memory, generator=torch.Generator(), **kw)
    it = iter(loader)
    for _ in range(start_step, end_step):
        yield [next(it) for _ in range(accum)]


def describe_skipped(batch: dict) -> list[str]:
    """One log line per record a worker replaced, naming it and why."""
    return [f"skipped record {s['index']} ({s['reason']}): {s['error']}" for s in batch.get("skipped", [])]

