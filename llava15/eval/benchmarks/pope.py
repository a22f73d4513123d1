"""POPE (COCO; random, popular, adversarial): yes/no hallucination probing, mean F1 of the 3 splits.

Official layout: ``pope/llava_pope_test.jsonl``, images ``pope/val2014/``, labels
``pope/coco/coco_pope_<split>.json`` (the label files at AoiDragon/POPE@e3e3926; HEAD's files misalign).
As ``eval_pope.py``: per label file, the answers whose question has that category, in answer-file
order, are paired with the labels by position.

lmms-lab/POPE (``question_id``, ``question`` without the suffix, ``answer``, ``category``, ``image``,
``image_source``): the same prompt (question + the short-answer suffix); the labels are the rows'
``answer`` per category in row order. Its 9,000 questions are POPE's current files, not LLaVA's 8,910
(the result says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llava15.eval.benchmarks.base import (
    SHORT_ANSWER,
    Benchmark,
    Question,
    Source,
    hub_id,
    hub_question,
    read_jsonl,
    require,
    result,
    with_source,
)
from llava15.eval.bootstrap import units
from llava15.eval.metrics import pope_parse, pope_scores


class Pope(Benchmark):
    name = "pope"
    title = "POPE"
    folder = "pope"
    max_new_tokens = 128
    question_file = "llava_pope_test.jsonl"
    image_dir = "val2014"
    score_files = ("coco",)

    def _hub(self, src: Source) -> list[Question]:
        rows = src.table().rows(["question_id", "question", "category", "image_source"])
        return [hub_question(src, i, hub_id(r["question_id"]), r["question"] + "\n" + SHORT_ANSWER,
                             self.max_new_tokens, image_key=r["image_source"] or None, category=r["category"])
                for i, r in enumerate(rows)]  # fmt: skip

    def _ground_truth(self, src: Source) -> tuple[dict[str, str], dict[str, tuple[list[str], str]]]:
        """``{question_id: category}`` and ``{category: (labels in order, where they are)}``."""
        labels: dict[str, tuple[list[str], str]] = {}
        if src.kind == "hub":
            rows = src.table().rows(["question_id", "category", "answer"])
            for r in rows:
                labels.setdefault(r["category"], ([], src.describe()))[0].append(r["answer"])
            return {str(hub_id(r["question_id"])): r["category"] for r in rows}, labels
        questions = read_jsonl(require(src.question_file, "POPE"))
        label_dir = require(src.root / "coco", "POPE label files")
        for label_file in sorted(label_dir.glob("coco_pope_*.json")):
            category = label_file.name[len("coco_pope_") : -len(".json")]
            labels[category] = ([row["label"] for row in read_jsonl(label_file)], str(label_file))
        if not labels:
            raise ValueError(f"POPE: no coco_pope_<split>.json label file in {label_dir}")
        return {str(q["question_id"]): q["category"] for q in questions}, labels

    def score(
        self,
        answers: list[dict[str, Any]],
        data_root: str | Path | Source,
        out_dir: Path | None = None,
        judge: Any = None,
    ) -> dict[str, Any]:
        src = self.locate(data_root)
        categories, labels_by_cat = self._ground_truth(src)
        per: dict[str, Any] = {}
        notes: list[str] = []
        rows: list[list[Any]] = []
        for category, (labels, where) in labels_by_cat.items():
            texts, keys = [], []
            for a in answers:
                cat = categories.get(str(a["question_id"]))
                if cat is None:
                    raise ValueError(f"POPE: answer question_id {a['question_id']!r} is not in the question file")
                if cat == category:
                    texts.append(a["text"])
                    keys.append(str(a["question_id"]))
            if not texts:
                continue
            if len(texts) < len(labels):  # eval_pope.py zips: a partial run pairs with the first labels
                notes.append(f"{category}: {len(texts)} of {len(labels)} questions answered")
                labels = labels[: len(texts)]
            try:
                per[category] = pope_scores(texts, labels)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from e
            rows += [[k, category, int(pope_parse(t) == "yes"), int(lab != "no")]
                     for k, t, lab in zip(keys, texts, labels)]  # fmt: skip
        if not per:
            raise ValueError(f"POPE: no answer matches a split of {src.describe()}")
        mean_f1 = sum(m["f1"] for m in per.values()) / len(per)
        if len(per) != 3:
            notes.append(f"only {sorted(per)} answered; mean F1 over those")
        res = result(self.name, "scored", 100 * mean_f1, {"mean_f1": mean_f1, "splits": per}, notes=notes,
                     bootstrap={**units("pope", rows), "unit": "question (within split)"})  # fmt: skip
        return with_source(res, src)
