"""What every benchmark module provides, and the file helpers they share.

A benchmark reads its official files under the evaluation root (``playground/data/eval/<folder>/`` as
the original ``docs/Evaluation.md`` lays it out), turns them into :class:`Question` s whose
``prompt_text`` is the user message exactly as the original eval script builds it (Table 8 suffix,
``<image>\\n`` prefix), writes each answer as the original script's JSONL record, and scores a list of
such records (from our runner, the original code or anything else that writes ``question_id`` + ``text``).

``score`` returns a result dict: ``benchmark``, ``status`` (``scored`` | ``submission`` | ``skipped``),
``value`` (the Table 2 number, in the paper's units, or None), ``metrics``, ``files`` (written paths),
``notes``. A judged benchmark without a judge is ``skipped``, never 0.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_PREFIX = "<image>\n"
SHORT_ANSWER = "Answer the question using a single word or phrase."
LETTER_ANSWER = "Answer with the option's letter from the given choices directly."
LETTER_ANSWER_CN = "请直接回答选项字母。"


@dataclass
class Question:
    """One generation request, built as the original eval script builds it."""

    id: Any
    """``question_id`` as in the official file (int or str, kept as is for the answer record)."""
    image_path: Path | None
    """Absolute image path; None for text-only questions or images carried in ``extra``."""
    prompt_text: str
    """The user message: ``<image>\\n`` + question + response-format suffix."""
    max_new_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)
    """``record_prompt`` (the ``prompt`` field the original writes) and benchmark-specific fields."""


class Benchmark:
    """Base class: subclasses set the class attributes and implement ``load`` and ``score``."""

    name: str = ""
    title: str = ""
    """Column name in the paper's Table 2."""
    folder: str = ""
    """Folder under the evaluation root."""
    max_new_tokens: int = 128
    judged: bool = False
    question_file: str = ""
    """A ``model_vqa_loader.py``-style question file under ``folder`` (for the default ``load``)."""
    image_dir: str = ""
    """Its image folder under ``folder`` ("" = ``folder`` itself)."""

    # ---- files
    def root(self, data_root: str | Path) -> Path:
        return eval_root(data_root) / self.folder

    def load(self, data_root: str | Path) -> list[Question]:
        """Questions of ``question_file`` (``<image>\\n`` + text); benchmarks with other files override."""
        if not self.question_file:
            raise NotImplementedError(f"{self.name}: no question_file and no load()")
        root = self.root(data_root)
        return loader_questions(root / self.question_file, root / self.image_dir, self.max_new_tokens)

    def open_image(self, question: Question) -> Any:
        """The PIL image for a question (RGB), or None. MMBench overrides (base64 in the TSV)."""
        if question.image_path is None:
            return None
        from PIL import Image

        with Image.open(question.image_path) as im:
            return im.convert("RGB")

    # ---- answers
    def answer_record(self, question: Question, text: str, model_id: str) -> dict[str, Any]:
        """The record the original ``model_vqa*.py`` writes (``answer_id`` made deterministic)."""
        return {
            "question_id": question.id,
            "prompt": question.extra.get("record_prompt", question.prompt_text),
            "text": text,
            "answer_id": answer_id(self.name, question.id, text),
            "model_id": model_id,
            "metadata": {},
        }

    def score(
        self, answers: list[dict[str, Any]], data_root: str | Path, out_dir: Path | None, judge: Any = None
    ) -> dict[str, Any]:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------- helpers


def eval_root(data_root: str | Path) -> Path:
    """Accept either the repository-style root (holding ``playground/data/eval``) or that folder."""
    root = Path(data_root)
    nested = root / "playground" / "data" / "eval"
    return nested if nested.is_dir() else root


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what}: expected {path} (official layout playground/data/eval/...)")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {lineno} is not JSON ({e.msg})") from e
    return rows


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_json(path: Path, obj: Any, indent: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
    return path


def answer_id(benchmark: str, question_id: Any, text: str) -> str:
    """Deterministic stand-in for the original's random ``shortuuid`` (so reruns are byte-identical)."""
    return hashlib.sha1(f"{benchmark}\0{question_id}\0{text}".encode()).hexdigest()[:22]


def loader_questions(
    path: Path, image_dir: Path, max_new_tokens: int, keep: Sequence[str] = ("category",)
) -> list[Question]:
    """Questions of a ``model_vqa_loader.py`` / ``model_vqa.py`` question file: ``<image>\\n`` + text."""
    out = []
    for line in read_jsonl(require(path, "question file")):
        for key in ("question_id", "image", "text"):
            if key not in line:
                raise ValueError(f"{path}: question {line.get('question_id')!r} has no field {key!r}")
        extra = {"record_prompt": line["text"], **{k: line[k] for k in keep if k in line}}
        out.append(
            Question(line["question_id"], image_dir / line["image"], IMAGE_PREFIX + line["text"],
                     max_new_tokens, extra)
        )  # fmt: skip
    return out


def recorded_prompts(answers: list[dict[str, Any]], questions: list[dict[str, Any]]) -> list[str]:
    """Each answer's recorded ``prompt``; answers without one (e.g. from vLLM) take the question
    file's text, the k-th answer of a question id pairing with the k-th question of that id."""
    texts: dict[str, list[str]] = {}
    for q in questions:
        texts.setdefault(str(q["question_id"]), []).append(q["text"])
    seen: dict[str, int] = {}
    out = []
    for a in answers:
        qid = str(a["question_id"])
        if "prompt" in a:
            out.append(a["prompt"])
            continue
        k = seen.get(qid, 0)
        seen[qid] = k + 1
        if k >= len(texts.get(qid, [])):
            raise ValueError(f"answer {qid!r} has no 'prompt' and no matching question (occurrence {k + 1})")
        out.append(texts[qid][k])
    return out


def validate_answers(answers: Sequence[dict[str, Any]], benchmark: str, source: str = "answers") -> None:
    """Every record needs ``question_id`` and one of ``text`` (answers), ``tuple`` (LLaVA-Bench reviews)
    or ``score`` (MM-Vet grades); the error names the file, the record and what is missing."""
    for i, a in enumerate(answers):
        if not isinstance(a, dict) or "question_id" not in a or not ({"text", "tuple", "score"} & set(a)):
            raise ValueError(f"{benchmark}: {source} record {i} needs 'question_id' and 'text' "
                             f"(or 'tuple' / 'score'): {str(a)[:120]}")  # fmt: skip


def result(
    benchmark: str, status: str, value: float | None, metrics: dict[str, Any], **kw: Any
) -> dict[str, Any]:
    out = {"benchmark": benchmark, "status": status, "value": value, "metrics": metrics}
    out.update({"files": {}, "notes": []} | kw)
    return out
