"""`llava15 data prepare`: the real LLaVA-1.5 training data, downloaded into the original's layout.

Modules: `sources` (what each stage needs and where it comes from), `download` (resumable HTTP with
checksums), `hub` (Hub files through huggingface_hub), `extract` (idempotent archive extraction),
`ocr_vqa` (the image-by-image OCR-VQA fetcher), `report` (records checked against the images on disk,
filtered record file), `run` (the command). Nothing here runs unless the user runs `prepare`.
"""

from __future__ import annotations

from typing import Any


def run_prepare(args: Any) -> int:
    from llava15.data.prepare.run import run_prepare as run

    return run(args)
