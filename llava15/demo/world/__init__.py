"""The built-in synthetic visual world: deterministic PIL images of shapes and words, each with its scene
description, and every text generated from the scenes, written as real files in the real formats
(558K captions, the 665K mixture, official benchmark layouts). See `build.py` for the folder layout.

Read it in order: `words` (vocabularies) -> `scenes` (sample, draw, boxes) -> `text` (questions,
captions, prompts) and `text_only` -> `records` (training records) -> `benchmarks` and
`choice_benchmarks` (eval sets) -> `world` (seeded streams, file writing) -> `build` (`synthesize`,
`run_synth`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_synth", "synthesize"]


def __getattr__(name: str) -> Any:  # lazy: importing one submodule does not build the whole world
    if name in __all__:
        from llava15.demo.world import build

        return getattr(build, name)
    raise AttributeError(f"module 'llava15.demo.world' has no attribute {name!r}")
