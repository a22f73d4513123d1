"""The built-in synthetic visual world: deterministic PIL images of shapes and words, each with its scene
description, and every text generated from the scenes, written as real files in the real formats
(558K captions, the 665K mixture, official benchmark layouts). See `build.py` for the folder layout.

Read it in order: `words` (vocabularies) -> `scenes` (sample, draw, boxes) -> `text` (questions,
captions, prompts) and `text_only` -> `records` (training records) -> `benchmarks` and
`choice_benchmarks` (eval sets) -> `world` (seeded streams, file writing) -> `build` (`synthesize`,
`run_synth`).
"""

from llava15.data.synthetic.build import run_synth, synthesize

__all__ = ["run_synth", "synthesize"]
