"""VQAv2 (test-dev): short answers; scored by the EvalAI server (challenge 830, phase test-dev).

Layout: ``vqav2/llava_vqav2_mscoco_test-dev2015.jsonl`` (asked), ``vqav2/llava_vqav2_mscoco_test2015.jsonl``
(every test id, for the upload), images ``vqav2/test2015/``. ``convert_vqav2_for_submission.py``: one
``{"question_id", "answer"}`` per test2015 id, the answer passed through ``EvalAIAnswerProcessor``, ``""``
for ids not asked. When official-layout annotations are present (``vqav2/v2_mscoco_*_annotations.json``,
10 answers per question, e.g. val or the synthetic sets) the accuracy the server would compute is also
computed locally: ``vqaEval.py`` on the uploaded (normalised) answers, over every annotated question.

lmms-lab/VQAv2 split ``testdev`` (``question_id``, ``question``, ``image``): the prompt is the question +
the short-answer suffix; the upload covers the test-dev ids (the full test2015 id list is not in that
split). Rows that carry ``answers`` (the ``validation`` split) are scored locally the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llava15.eval.benchmarks.base import (
    SHORT_ANSWER,
    Benchmark,
    Question,
    Source,
    hub_question,
    read_jsonl,
    result,
    with_source,
    write_json,
)
from llava15.eval.bootstrap import units
from llava15.eval.metrics import normalize_answer, vqaeval_accuracy


class VQAv2(Benchmark):
    name = "vqav2"
    title = "VQAv2"
    folder = "vqav2"
    max_new_tokens = 128
    question_file = "llava_vqav2_mscoco_test-dev2015.jsonl"
    image_dir = "test2015"

    def _hub(self, src: Source) -> list[Question]:
        rows = src.table().rows(["question_id", "question", "image_id"])
        return [hub_question(src, i, r["question_id"], r["question"] + "\n" + SHORT_ANSWER, self.max_new_tokens,
                             image_key=r["image_id"], category="default") for i, r in enumerate(rows)]  # fmt: skip

    def _hub_score(self, src: Source, texts: dict[str, str], out_dir: Path | None) -> dict[str, Any]:
        rows = src.table().rows(["question_id", "answers"])
        upload = [{"question_id": r["question_id"], "answer": normalize_answer(texts[str(r["question_id"])])
                   if str(r["question_id"]) in texts else ""} for r in rows]  # fmt: skip
        files = {}
        if out_dir is not None:
            files["submission"] = str(write_json(Path(out_dir) / "vqav2_test-dev_submission.json", upload))
        notes = ["scored by the EvalAI server (challenge 830, test-dev): upload the submission file",
                 f"upload covers the {len(rows)} ids of {src.describe()} (not every test2015 id)"]  # fmt: skip
        annotated = [r for r in rows if r["answers"]]
        if not annotated:
            return result(self.name, "submission", None, {"n_answers": len(texts)}, files=files, notes=notes)
        uploaded = {str(u["question_id"]): u["answer"] for u in upload}
        unit_rows = []
        for r in annotated:
            gts = [a["answer"] if isinstance(a, dict) else a for a in r["answers"]]
            unit_rows.append([str(r["question_id"]), "", vqaeval_accuracy(uploaded[str(r["question_id"])], gts)])
        acc = 100 * sum(u[2] for u in unit_rows) / len(unit_rows)
        metrics = {"accuracy": acc, "n": len(unit_rows), "n_answers": len(texts)}
        return result(self.name, "scored", acc, metrics, files=files, bootstrap=units("mean", unit_rows),
                      notes=["local VQA accuracy on the split's annotations (the paper's number is test-dev)"])

    def score(
        self,
        answers: list[dict[str, Any]],
        data_root: str | Path,
        out_dir: Path | None = None,
        judge: Any = None,
    ) -> dict[str, Any]:
        src = self.locate(data_root)
        if src.kind == "hub":
            return with_source(self._hub_score(src, {str(a["question_id"]): a["text"] for a in answers}, out_dir), src)
        root = src.root
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
            for q in read_jsonl(full if full != root / self.question_file else src.question_file)
        ]  # fmt: skip
        files = {}
        if out_dir is not None:
            files["submission"] = str(write_json(Path(out_dir) / "vqav2_test-dev_submission.json", upload))
        annotations = sorted(root.glob("v2_mscoco_*_annotations.json"))
        if not annotations:
            res = result(self.name, "submission", None, {"n_answers": len(texts)}, files=files, notes=notes)
            return with_source(res, src)
        uploaded = {str(u["question_id"]): u["answer"] for u in upload}
        unit_rows = []
        for ann in json.loads(annotations[0].read_text(encoding="utf-8"))["annotations"]:
            gts = [a["answer"] for a in ann["answers"]]
            qid = str(ann["question_id"])
            unit_rows.append([qid, "", vqaeval_accuracy(uploaded.get(qid, ""), gts)])
        accs = [u[2] for u in unit_rows]
        acc = 100 * sum(accs) / len(accs) if accs else 0.0
        notes = [
            f"local VQA accuracy against {annotations[0].name} (the paper's number is the server's test-dev)"
        ]
        metrics = {"accuracy": acc, "n": len(accs), "n_answers": len(texts)}
        res = result(self.name, "scored", acc, metrics, files=files, notes=notes, bootstrap=units("mean", unit_rows))
        return with_source(res, src)
