"""VizWiz (test): short answers with the 'Unanswerable' instruction; scored by the EvalAI server (2185).

Layout: ``vizwiz/llava_test.jsonl``, images ``vizwiz/test/``. ``convert_vizwiz_for_submission.py``: one
``{"image", "answer"}`` per question in question-file order, the answer passed through
``EvalAIAnswerProcessor``; every question must have an answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llava15.eval.benchmarks.base import (
    Benchmark,
    read_jsonl,
    require,
    result,
    write_json,
)
from llava15.eval.metrics import normalize_answer


class VizWiz(Benchmark):
    name = "vizwiz"
    title = "VizWiz"
    folder = "vizwiz"
    max_new_tokens = 128
    question_file = "llava_test.jsonl"
    image_dir = "test"

    def score(
        self,
        answers: list[dict[str, Any]],
        data_root: str | Path,
        out_dir: Path | None = None,
        judge: Any = None,
    ) -> dict[str, Any]:
        questions = read_jsonl(require(self.root(data_root) / "llava_test.jsonl", "VizWiz question file"))
        texts = {str(a["question_id"]): a["text"] for a in answers}
        missing = [q["question_id"] for q in questions if str(q["question_id"]) not in texts]
        if missing:
            raise ValueError(f"VizWiz: {len(missing)} questions have no answer (first: {missing[:5]}); "
                             "the server needs all of them")  # fmt: skip
        upload = [
            {"image": q["image"], "answer": normalize_answer(texts[str(q["question_id"])])} for q in questions
        ]
        unanswerable = sum(1 for u in upload if u["answer"] == "unanswerable")
        files = {}
        if out_dir is not None:
            files["submission"] = str(write_json(Path(out_dir) / "vizwiz_test_submission.json", upload))
        metrics = {
            "n_answers": len(upload),
            "unanswerable_ratio": unanswerable / len(upload) if upload else 0.0,
        }
        notes = ["scored by the EvalAI server (challenge 2185): upload the submission file"]
        return result(self.name, "submission", None, metrics, files=files, notes=notes)
