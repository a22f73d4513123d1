"""GQA (testdev-balanced): short answers, exact match after ``rstrip('.').lower()``.

Layout: ``gqa/llava_gqa_testdev_balanced.jsonl``, images ``gqa/data/images/``, ground truth
``gqa/data/testdev_balanced_questions.json``. ``convert_gqa_for_eval.py`` writes
``testdev_balanced_predictions.json`` (``[{"questionId", "prediction"}]``); LLaVA's trimmed GQA ``eval.py``
reports plain accuracy over the balanced questions (an unanswered one counts wrong here).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llava15.eval.benchmarks.base import Benchmark, result, write_json
from llava15.eval.metrics import gqa_postprocess


class GQA(Benchmark):
    name = "gqa"
    title = "GQA"
    folder = "gqa"
    max_new_tokens = 128
    question_file = "llava_gqa_testdev_balanced.jsonl"
    image_dir = "data/images"

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
        gt_path = self.root(data_root) / "data" / "testdev_balanced_questions.json"
        if not gt_path.exists():
            return result(self.name, "submission", None, {}, files=files,
                          notes=[f"ground truth {gt_path} absent: predictions written, not scored"])  # fmt: skip
        questions = json.loads(gt_path.read_text(encoding="utf-8"))
        by_id = {str(p["questionId"]): p["prediction"] for p in preds}
        hits = [
            by_id.get(str(qid)) == q["answer"] for qid, q in questions.items() if q.get("isBalanced", True)
        ]
        acc = 100 * sum(hits) / len(hits) if hits else 0.0
        missing = sum(1 for qid in questions if str(qid) not in by_id)
        notes = [f"{missing} questions unanswered (counted wrong)"] if missing else []
        return result(self.name, "scored", acc, {"accuracy": acc, "n": len(hits)}, files=files, notes=notes)
