"""VizWiz (test): short answers with the 'Unanswerable' instruction; scored by the EvalAI server (2185).

Layout: ``vizwiz/llava_test.jsonl``, images ``vizwiz/test/``. ``convert_vizwiz_for_submission.py``: one
``{"image", "answer"}`` per question in question-file order, the answer passed through
``EvalAIAnswerProcessor``; every question must have an answer.

lmms-lab/VizWiz-VQA split ``test`` (``question_id`` = the image name without ``.jpg``, ``question``,
``image``): LLaVA's prompt (the question as is, not capitalised as lmms-eval does, + the
'Unanswerable' line + the short-answer suffix); the upload names ``<question_id>.jpg``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llava15.eval.benchmarks.base import (
    SHORT_ANSWER,
    Benchmark,
    Question,
    Source,
    hub_question,
    read_jsonl,
    require,
    result,
    with_source,
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

    def _hub(self, src: Source) -> list[Question]:
        rows = src.table().rows(["question_id", "question"])
        return [hub_question(src, i, r["question_id"], r["question"] + UNANSWERABLE + SHORT_ANSWER, self.max_new_tokens)
                for i, r in enumerate(rows)]  # fmt: skip

    def _questions(self, src: Source) -> list[dict[str, Any]]:
        if src.kind == "hub":
            return [{"question_id": r["question_id"], "image": _jpg(str(r["question_id"]))}
                    for r in src.table().rows(["question_id"])]  # fmt: skip
        return read_jsonl(require(src.question_file, "VizWiz question file"))

    def score(
        self,
        answers: list[dict[str, Any]],
        data_root: str | Path,
        out_dir: Path | None = None,
        judge: Any = None,
    ) -> dict[str, Any]:
        src = self.locate(data_root)
        questions = self._questions(src)
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
        return with_source(result(self.name, "submission", None, metrics, files=files, notes=notes), src)


UNANSWERABLE = "\nWhen the provided information is insufficient, respond with 'Unanswerable'.\n"


def _jpg(name: str) -> str:
    return name if name.endswith(".jpg") else name + ".jpg"
