"""The training data of a recipe: the index, the lazy dataset, the per-epoch sample order, the collator.

`index_data(cfg)` scans the data file once (`data.dataset.DatasetIndex`: byte spans, modality lengths,
cheap checks, image files) before any model is built, so bad data stops a run in seconds.
`build_data(cfg, index, tok, image, config, dist, packed_attention)` makes the `LlavaDataset` (the
recipe's `data` section with the model's image settings), the order function (a seeded permutation per
epoch for packing, the original modality-grouped order otherwise), the collator and, with
`data.balance_tokens`, each sample's estimated token count for balancing micro-batches. With
`data.pack_tokens: 0` and a language model that isolates packed samples itself (`packed_attention`),
every micro-batch is one unpadded row.
"""

from __future__ import annotations

from typing import Any

import torch

from llava15.config import RecipeConfig
from llava15.data.images import ImageSettings
from llava15.train.batches import random_order
from llava15.train.distributed import DistInfo

TOKENS_PER_WORD = 1.4  # LLaMA-family tokenizers on English: what turns word counts into token estimates


def index_data(cfg: RecipeConfig):
    """The data file's `DatasetIndex` (every record checked once, images included)."""
    from llava15.data.dataset import DatasetIndex

    d = cfg.data
    return DatasetIndex.build(d.path, d.image_folder or None, d.bad_records)


def token_estimates(modality_lengths: list[int], num_image_tokens: int) -> list[int]:
    """Tokens per sample from the original's modality lengths (words, negative when text-only)."""
    return [int(abs(n) * TOKENS_PER_WORD) + (num_image_tokens if n > 0 else 0) for n in modality_lengths]


def build_data(cfg: RecipeConfig, index: Any, tok: Any, image: ImageSettings, config: Any, dist: DistInfo,
               packed_attention: bool):
    """(dataset, order function, collate function, token estimates or None) for the recipe's data."""
    from llava15.data.collate import Collator
    from llava15.data.dataset import LlavaDataset
    from llava15.model.format import num_image_tokens

    d = cfg.data
    n_img = num_image_tokens(config)
    dataset = LlavaDataset(d.path, tok, d.template, int(config.image_token_id), image_folder=d.image_folder or None,
                           num_image_tokens=n_img, model_max_length=d.model_max_length, image=image,
                           bad_records=d.bad_records, index=index)
    if d.batching == "pack":
        order = random_order(len(dataset), cfg.train.seed)
    else:
        order = grouped_order(dataset.modality_lengths, cfg, dist)
    budget = d.pack_tokens or d.model_max_length
    if not d.pack_tokens and packed_attention:
        budget *= cfg.train.micro_batch_size  # every sample of a micro-batch fits one row: no padding
    collate = Collator(pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
                       image_token_id=int(config.image_token_id), num_image_tokens=n_img,
                       mode="pack" if d.batching == "pack" else "pad", padding_side=d.padding_side,
                       pack_tokens=budget, image_size=image.size)
    lengths = token_estimates(dataset.modality_lengths, n_img) if d.balance_tokens else None
    return dataset, order, collate, lengths


def grouped_order(lengths: list[int], cfg: RecipeConfig, dist: DistInfo):
    """The original `group_by_modality_length` order, its global-RNG draws seeded per epoch."""
    from llava15.data.sampler import modality_grouped_indices

    t = cfg.train
    accum = t.global_batch_size // (t.micro_batch_size * dist.world_size)

    def order(epoch: int) -> list[int]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(t.seed + epoch)
            gen = torch.Generator().manual_seed(t.seed + epoch)
            return list(modality_grouped_indices(lengths, t.micro_batch_size, dist.world_size * accum, gen))
    return order
