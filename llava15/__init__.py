"""llava15: LLaVA-1.5 training, evaluation, inference and conversion around transformers' Llava.

`import llava15` is light: it imports neither torch nor any server or training dependency.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load"]


def load(path_or_id: str, **kwargs: Any) -> Any:
    """Load a checkpoint (folder or hub id) as a bundle with `.model`, `.tokenizer`, `.template`,
    the image settings, and `.generate(conversations, images, **decoding) -> list[str]`."""
    from llava15.infer.engine import load_generation_bundle

    return load_generation_bundle(path_or_id, **kwargs)
