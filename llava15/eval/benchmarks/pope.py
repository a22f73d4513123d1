"""POPE (COCO; random, popular, adversarial): yes/no hallucination probing, mean F1 of the 3 splits.

Layout: ``pope/llava_pope_test.jsonl``, images ``pope/val2014/``, labels ``pope/coco/coco_pope_<split>.json``
(the label files at AoiDragon/POPE@e3e3926; HEAD's files misalign). As ``eval_pope.py``: per label file,
the answers whose question has that category, in answer-file order, are paired with the labels by
position.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llava15.eval.benchmarks.base import Benchmark, read_jsonl, require, result
from llava15.eval.metrics import pope_scores


class Pope(Benchmark):
    name = "pope"
    title = "POPE"
    folder = "pope"
    max_new_tokens = 128
    question_file = "llava_pope_test.jsonl"
    image_dir = "val2014"

    def score(
        self,
        answers: list[dict[str, Any]],
        data_root: str | Path,
        out_dir: Path | None = None,
        judge: Any = None,
    ) -> dict[str, Any]:
        root = self.root(data_root)
        questions = {
            str(q["question_id"]): q for q in read_jsonl(require(root / "llava_pope_test.jsonl", "POPE"))
        }
        label_dir = require(root / "coco", "POPE label files")
        per: dict[str, Any] = {}
        notes: list[str] = []
        for label_file in sorted(label_dir.glob("coco_pope_*.json")):
            category = label_file.name[len("coco_pope_") : -len(".json")]
            labels = [row["label"] for row in read_jsonl(label_file)]
            texts = []
            for a in answers:
                q = questions.get(str(a["question_id"]))
                if q is None:
                    raise ValueError(
                        f"POPE: answer question_id {a['question_id']!r} is not in the question file"
                    )
                if q["category"] == category:
                    texts.append(a["text"])
            if not texts:
                continue
            if len(texts) < len(labels):  # eval_pope.py zips: a partial run pairs with the first labels
                notes.append(f"{category}: {len(texts)} of {len(labels)} questions answered")
                labels = labels[: len(texts)]
            try:
                per[category] = pope_scores(texts, labels)
            except ValueError as e:
                raise ValueError(f"{label_file}: {e}") from e
        if not per:
            raise ValueError(f"POPE: no answer matches a label file in {label_dir}")
        mean_f1 = sum(m["f1"] for m in per.values()) / len(per)
        if len(per) != 3:
            notes.append(f"only {sorted(per)} answered; mean F1 over those")
        return result(self.name, "scored", 100 * mean_f1, {"mean_f1": mean_f1, "splits": per}, notes=notes)
