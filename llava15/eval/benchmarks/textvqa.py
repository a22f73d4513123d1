"""TextVQA (val): short answers with the OCR-token prompt LLaVA-1.5 used, m4c VQA accuracy.

Layout: ``textvqa/llava_textvqa_val_v051_ocr.jsonl`` (question, ``Reference OCR token: ...`` line, suffix),
images ``textvqa/train_images/``, annotations ``textvqa/TextVQA_0.5.1_val.json``. As ``eval_textvqa.py``:
the question is recovered from the recorded prompt, lowercased, and matched with the annotation by
``(image_id, question)``; accuracy is averaged over the answers given.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from llava15.eval.benchmarks.base import (
    Benchmark,
    read_jsonl,
    recorded_prompts,
    require,
    result,
)
from llava15.eval.metrics import vqa_accuracy

_OLD_OCR = re.compile(r"Question: (.*?) Short answer:", re.DOTALL)


def question_from_prompt(prompt: str) -> str:
    """``eval_textvqa.prompt_processor``: the question line of the recorded prompt, lowercased."""
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        m = _OLD_OCR.search(prompt)
        if m is None:
            raise ValueError(f"TextVQA: cannot find the question in prompt {prompt[:80]!r}")
        question = m.group(1)
    elif "Reference OCR token: " in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith("Reference OCR token:") else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        raise ValueError(f"TextVQA: unrecognised prompt layout ({len(lines)} lines): {prompt[:80]!r}")
    return question.lower()


class TextVQA(Benchmark):
    name = "textvqa"
    title = "VQAT"
    folder = "textvqa"
    max_new_tokens = 128
    question_file = "llava_textvqa_val_v051_ocr.jsonl"
    image_dir = "train_images"

    def score(
        self,
        answers: list[dict[str, Any]],
        data_root: str | Path,
        out_dir: Path | None = None,
        judge: Any = None,
    ) -> dict[str, Any]:
        root = self.root(data_root)
        path = require(root / "TextVQA_0.5.1_val.json", "TextVQA annotations")
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
        ann = {(str(a["image_id"]), a["question"].lower()): a for a in data}
        qfile = root / "llava_textvqa_val_v051_ocr.jsonl"
        questions = read_jsonl(qfile) if qfile.exists() else []
        scores = []
        for a, prompt in zip(answers, recorded_prompts(answers, questions)):
            key = (str(a["question_id"]), question_from_prompt(prompt))
            if key not in ann:
                raise ValueError(f"TextVQA: no annotation for image {key[0]!r} question {key[1]!r} in {path}")
            scores.append(vqa_accuracy(a["text"], ann[key]["answers"]))
        acc = 100 * sum(scores) / len(scores) if scores else 0.0
        return result(self.name, "scored", acc, {"accuracy": acc, "n": len(scores)})
