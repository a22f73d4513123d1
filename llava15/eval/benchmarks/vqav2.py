"""VQAv2 (test-dev): short answers; scored by the EvalAI server (challenge 830, phase test-dev).

Layout: ``vqav2/llava_vqav2_mscoco_test-dev2015.jsonl`` (asked), ``vqav2/llava_vqav2_mscoco_test2015.jsonl``
(every test id, for the upload), images ``vqav2/test2015/``. ``convert_vqav2_for_submission.py``: one
``{"question_id", "answer"}`` per test2015 id, the answer passed through ``EvalAIAnswerProcessor``, ``""``
for ids not asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llava15.eval.benchmarks.base import Benchmark, loader_questions, read_jsonl, result, write_json
from llava15.eval.metrics import normalize_answer


class VQAv2(Benchmark):
    name = "vqav2"
    title = "VQAv2"
    folder = "vqav2"
    max_new_tokens = 128

    def load(self, data_root):
        root = self.root(data_root)
        return loader_questions(
            root / "llava_vqav2_mscoco_test-dev2015.jsonl", root / "test2015", self.max_new_tokens
        )

    def score(self, answers, data_root, out_dir=None, judge=None) -> dict[str, Any]:
        root = self.root(data_root)
        notes = ["scored by the EvalAI server (challenge 830, test-dev): upload the submission file"]
        full = root / "llava_vqav2_mscoco_test2015.jsonl"
        if not full.exists():
            full = root / "llava_vqav2_mscoco_test-dev2015.jsonl"
            notes.append(
                f"{root / 'llava_vqav2_mscoco_test2015.jsonl'} absent: upload covers test-dev ids only"
            )
        texts = {str(a["question_id"]): a["text"] for a in answers}
        upload = [
            {"question_id": q["question_id"], "answer": normalize_answer(texts[str(q["question_id"])])
             if str(q["question_id"]) in texts else ""}
            for q in read_jsonl(full)
        ]  # fmt: skip
        files = {}
        if out_dir is not None:
            files["submission"] = str(write_json(Path(out_dir) / "vqav2_test-dev_submission.json", upload))
        return result(self.name, "submission", None, {"n_answers": len(texts)}, files=files, notes=notes)
