"""VQAv2 (test-dev): short answers; scored by the EvalAI server (challenge 830, phase test-dev).

Layout: ``vqav2/llava_vqav2_mscoco_test-dev2015.jsonl`` (asked), ``vqav2/llava_vqav2_mscoco_test2015.jsonl``
(every test id, for the upload), images ``vqav2/test2015/``. ``convert_vqav2_for_submission.py``: one
``{"question_id", "answer"}`` per test2015 id, the answer passed through ``EvalAIAnswerProcessor``, ``""``
for ids not asked. When official-layout annotations are present (``vqav2/v2_mscoco_*_annotations.json``,
10 answers per question, e.g. val or the synthetic sets) the accuracy the server would compute is also
computed locally: ``vqaEval.py`` on the uploaded (normalised) answers, over every annotated question.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llava15.eval.benchmarks.base import Benchmark, read_jsonl, result, write_json
from llava15.eval.metrics import normalize_answer, vqaeval_accuracy


class VQAv2(Benchmark):
    name = "vqav2"
    title = "VQAv2"
    folder = "vqav2"
    max_new_tokens = 128
    question_file = "llava_vqav2_mscoco_test-dev2015.jsonl"
    image_dir = "test2015"

    def score(
        self,
        answers: list[dict[str, Any]],
        data_root: str | Path,
        out_dir: Path | None = None,
        judge: Any = None,
    ) -> dict[str, Any]:
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
        annotations = sorted(root.glob("v2_mscoco_*_annotations.json"))
        if not annotations:
            return result(self.name, "submission", None, {"n_answers": len(texts)}, files=files, notes=notes)
        uploaded = {str(u["question_id"]): u["answer"] for u in upload}
        accs = []
        for ann in json.loads(annotations[0].read_text(encoding="utf-8"))["annotations"]:
            gts = [a["answer"] for a in ann["answers"]]
            accs.append(vqaeval_accuracy(uploaded.get(str(ann["question_id"]), ""), gts))
        acc = 100 * sum(accs) / len(accs) if accs else 0.0
        notes = [
            f"local VQA accuracy against {annotations[0].name} (the paper's number is the server's test-dev)"
        ]
        metrics = {"accuracy": acc, "n": len(accs), "n_answers": len(texts)}
        return result(self.name, "scored", acc, metrics, files=files, notes=notes)
