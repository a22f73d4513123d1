"""TextVQA (val): short answers with the OCR-token prompt LLaVA-1.5 used, m4c VQA accuracy.

Layout: ``textvqa/llava_textvqa_val_v051_ocr.jsonl`` (question, ``Reference OCR token: ...`` line, suffix),
images ``textvqa/train_images/``, annotations ``textvqa/TextVQA_0.5.1_val.json``. As ``eval_textvqa.py``:
the question is recovered from the recorded prompt, lowercased, and matched with the annotation by
``(image_id, question)``; accuracy is averaged over the answers given.

lmms-lab/textvqa split ``validation`` (``image_id``, ``question``, ``answers``, ``ocr_tokens``, ``image``):
the same three-line prompt (question ``str.capitalize``-d, ``Reference OCR token: `` + tokens joined by
``", "``, suffix), ``question_id`` = the image id as in LLaVA's file; annotations from the rows. A split
without ``ocr_tokens`` gets the two-line prompt (question + suffix), which the result notes as not
LLaVA-1.5's setting.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from llava15.eval.benchmarks.base import (
    SHORT_ANSWER,
    Benchmark,
    Question,
    Source,
    hub_question,
    read_jsonl,
    recorded_prompts,
    require,
    result,
    with_source,
)
from llava15.eval.bootstrap import units
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
    score_files = ("TextVQA_0.5.1_val.json",)

    def _hub(self, src: Source) -> list[Question]:
        table = src.table()
        ocr = "ocr_tokens" in table.columns
        out = []
        for i, r in enumerate(table.rows(["image_id", "question", "ocr_tokens"])):
            line = f"\nReference OCR token: {', '.join(r['ocr_tokens'] or [])}" if ocr else ""
            text = r["question"].capitalize() + line + "\n" + SHORT_ANSWER
            out.append(hub_question(src, i, r["image_id"], text, self.max_new_tokens, image_key=r["image_id"]))
        return out

    def _annotations(self, src: Source) -> tuple[dict[tuple[str, str], Any], str]:
        if src.kind == "hub":
            rows = src.table().rows(["image_id", "question", "answers"])
            return {(str(r["image_id"]), r["question"].lower()): r for r in rows}, src.describe()
        path = require(src.root / "TextVQA_0.5.1_val.json", "TextVQA annotations")
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
        return {(str(a["image_id"]), a["question"].lower()): a for a in data}, str(path)

    def score(
        self,
        answers: list[dict[str, Any]],
        data_root: str | Path,
        out_dir: Path | None = None,
        judge: Any = None,
    ) -> dict[str, Any]:
        src = self.locate(data_root)
        ann, path = self._annotations(src)
        qfile = src.question_file
        if src.kind == "hub":
            questions = [{"question_id": q.id, "text": q.extra["record_prompt"]} for q in self._hub(src)]
        else:
            questions = read_jsonl(qfile) if qfile is not None and qfile.exists() else []
        scores, unit_rows = [], []
        for a, prompt in zip(answers, recorded_prompts(answers, questions)):
            key = (str(a["question_id"]), question_from_prompt(prompt))
            if key not in ann:
                raise ValueError(f"TextVQA: no annotation for image {key[0]!r} question {key[1]!r} in {path}")
            scores.append(vqa_accuracy(a["text"], ann[key]["answers"]))
            unit_rows.append([f"{key[0]}#{key[1]}", "", scores[-1]])
        acc = 100 * sum(scores) / len(scores) if scores else 0.0
        notes = []
        if src.kind == "hub" and "ocr_tokens" not in src.table().columns:
            notes.append("prompt without the 'Reference OCR token' line: this split has no ocr_tokens "
                         "(LLaVA-1.5 put them in the prompt; not comparable with the paper's 61.3)")
        res = result(self.name, "scored", acc, {"accuracy": acc, "n": len(scores)}, notes=notes,
                     bootstrap=units("mean", unit_rows))  # fmt: skip
        return with_source(res, src)
