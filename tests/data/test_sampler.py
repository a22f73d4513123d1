"""The modality-grouped sampler reproduces the original's order (sampler.json) and resumes."""

from __future__ import annotations

import random

import pytest
import torch

from llava15.data import modality_grouped_indices
from llava15.data.sampler import ModalityGroupedSampler, split_to_even_chunks


def _run(lengths, bs, ws, seed, gen_seed):
    torch.manual_seed(seed)
    gen = None
    if gen_seed is not None:
        gen = torch.Generator()
        gen.manual_seed(gen_seed)
    return modality_grouped_indices(lengths, bs, ws, gen)


def test_sampler_fixture(official):
    data = official("sampler")
    for run in data["runs"]:
        got = _run(data["lengths"], data["batch_size"], data["world_size"], run["torch_manual_seed"],
                   run["generator_seed"])
        assert got == run["indices"], run["torch_manual_seed"]
    for ex in data["split_to_even_chunks_examples"]:
        assert split_to_even_chunks(ex["indices"], ex["lengths"], ex["num_chunks"]) == ex["result"]


def test_fixture_lengths_recipe(official):
    data = official("sampler")
    rng = random.Random(20240501)
    lengths = []
    for _ in range(200):
        v = rng.randint(1, 400)
        lengths.append(-v if rng.random() < 0.3 else v)
    assert lengths == data["lengths"]


def test_megabatches_single_modality_and_permutation():
    lengths = [(i % 37) + 1 if i % 4 else -((i % 11) + 1) for i in range(301)]
    order = _run(lengths, 4, 2, 1, 7)
    assert sorted(order) == list(range(301))
    megas = [order[s:s + 8] for s in range(0, len(order), 8)]
    for mega in megas[:-1]:
        assert len({lengths[i] > 0 for i in mega}) == 1
    assert megas[-1] == sorted(megas[-1]) or len(megas[-1]) < 8
    with pytest.raises(ValueError, match="length 0"):
        modality_grouped_indices([1, 0, -1], 1, 1)


def test_sampler_ranks_cover_and_resume():
    lengths = [(i % 13) + 1 if i % 3 else -((i % 5) + 1) for i in range(50)]
    ranks = [ModalityGroupedSampler(lengths, 4, num_replicas=2, rank=r, seed=3) for r in range(2)]
    orders = [list(s) for s in ranks]
    assert len(orders[0]) == len(orders[1]) == len(ranks[0])
    assert set(orders[0]) | set(orders[1]) == set(range(50))
    s = ModalityGroupedSampler(lengths, 4, num_replicas=2, rank=1, seed=3)
    state = s.state_dict(consumed=8)
    resumed = ModalityGroupedSampler(lengths, 4, num_replicas=2, rank=1, seed=3)
    resumed.load_state_dict(state)
    assert list(resumed) == orders[1][8:]
    before = torch.get_rng_state()
    s.set_epoch(1)
    assert list(s) != orders[1] and torch.equal(before, torch.get_rng_state())
