"""Data pipeline: conversations, templates, token-exact tokenization, images, datasets, batching.

Imports are lazy so that `import llava15.data` stays light (no transformers, no torch until needed).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Conversation": "conversation", "Message": "conversation", "DataError": "conversation",
    "IMAGE_TOKEN": "conversation",
    "read_records": "formats", "record_to_conversation": "formats",
    "Template": "templates", "Segment": "templates", "TEMPLATES": "templates", "get_template": "templates",
    "Encoded": "tokenization", "encode_conversation": "tokenization", "encode_prompt": "tokenization",
    "stop_token_ids": "tokenization", "IGNORE_INDEX": "tokenization", "supervised_fraction": "tokenization",
    "CLIP_MEAN": "images", "CLIP_STD": "images", "load_image": "images", "preprocess_image": "images",
    "LlavaDataset": "dataset", "DatasetIndex": "dataset",
    "modality_grouped_indices": "sampler", "ModalityGroupedSampler": "sampler",
    "Collator": "collate", "expand_image_tokens": "collate",
    "plan_rows": "packing", "pack_rows": "packing", "Problems": "dataset",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'llava15.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"llava15.data.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
