"""GQA (testdev-balanced): short answers, exact match after ``rstrip('.').lower()``.

Layout: ``gqa/llava_gqa_testdev_balanced.jsonl``, images ``gqa/data/images/``, ground truth
``gqa/data/testdev_balanced_questions.json``. ``convert_gqa_for_eval.py`` writes
``testdev_balanced_predictions.json`` (``[{"questionId", "prediction"}]``); LLaVA's trimmed GQA ``eval.py``
reports plain accuracy over the balanced questions (an unanswered one counts wrong here).

lmms-lab/GQA: config ``testdev_balanced_instructions`` (``id``, ``imageId``, ``question``, ``answer``,
``isBalanced``) with the images in config ``testdev_balanced_images`` (``id``, ``image``); the prompt is
the question + the short-answer suffix (as LLaVA's file), the ground truth its ``answer``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llava15.eval.benchmarks.base import (
    IMAGE_PREFIX,
    SHORT_ANSWER,
    Benchmark,
    Question,
    Source,
    result,
    with_source,
    write_json,
)
from llava15.eval.bootstrap import units
from llava15.eval.metrics import gqa_postprocess


class GQA(Benchmark):
    name = "gqa"
    title = "GQA"
    folder = "gqa"
    max_new_tokens = 128
    question_file = "llava_gqa_testdev_balanced.jsonl"
    image_dir = "data/images"

    def _hub(self, src: Source) -> list[Question]:
        images = src.table(src.spec.images_config)
        row_of = {str(i): n for n, i in enumerate(images.column("id"))}
        out = []
        for r in src.table().rows(["id", "imageId", "question"]):
            text = r["question"] + "\n" + SHORT_ANSWER
            if str(r["imageId"]) not in row_of:
                raise ValueError(f"{src.describe()}: question {r['id']} has image {r['imageId']!r}, "
                                 f"which {src.spec.images_config} does not hold")
            extra = {"record_prompt": text, "image_key": ("hub", r["imageId"]),
                     "hub_image": (images, row_of[str(r["imageId"])], "image", None)}  # fmt: skip
            out.append(Question(r["id"], None, IMAGE_PREFIX + text, self.max_new_tokens, extra))
        return out

    def _ground_truth(self, src: Source) -> dict[str, dict[str, Any]] | None:
        if src.kind == "hub":
            rows = src.table().rows(["id", "answer", "isBalanced"])
            return {str(r["id"]): {"answer": r["answer"], "isBalanced": r["isBalanced"] is not False} for r in rows}
        gt_path = src.root / "data" / "testdev_balanced_questions.json"
        return json.loads(gt_path.read_text(encoding="utf-8")) if gt_path.exists() else None

    def score(
        self,
        answers: list[dict[str, Any]],
        data_root: str | Path,
        out_dir: Path | None = None,
        judge: Any = None,
    ) -> dict[str, Any]:
        preds = [{"questionId": a["question_id"], "prediction": gqa_postprocess(a["text"])} for a in answers]
        files = {}
        if out_dir is not None:
            files["predictions"] = str(write_json(Path(out_dir) / "testdev_balanced_predictions.json", preds))
        src = self.locate(data_root)
        questions = self._ground_truth(src)
        if questions is None:
            gt_path = src.root / "data" / "testdev_balanced_questions.json"
            res = result(self.name, "submission", None, {}, files=files,
                         notes=[f"ground truth {gt_path} absent: predictions written, not scored"])  # fmt: skip
            return with_source(res, src)
        by_id = {str(p["questionId"]): p["prediction"] for p in preds}
        unit_rows = [[str(qid), "", int(by_id.get(str(qid)) == q["answer"])]
                     for qid, q in questions.items() if q.get("isBalanced", True)]  # fmt: skip
        acc = 100 * sum(u[2] for u in unit_rows) / len(unit_rows) if unit_rows else 0.0
        missing = sum(1 for qid in questions if str(qid) not in by_id)
        notes = [f"{missing} questions unanswered (counted wrong)"] if missing else []
        res = result(self.name, "scored", acc, {"accuracy": acc, "n": len(unit_rows)}, files=files, notes=notes,
                     bootstrap=units("mean", unit_rows))  # fmt: skip
        return with_source(res, src)
