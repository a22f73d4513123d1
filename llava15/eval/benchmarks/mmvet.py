"""MM-Vet: 218 open questions graded 0-1 by a GPT judge against the ground truth.

Layout: ``mm-vet/llava-mm-vet.jsonl``, images ``mm-vet/images/``, ground truth ``mm-vet/mm-vet.json``
(``question``, ``answer`` with ``<AND>``/``<OR>``, ``capability``). Prompt: the question as is, 1024 new
tokens. ``convert_mmvet_for_eval.py``'s ``{"v1_<id>": answer}`` file is always written (for the online
evaluator); with a judge each answer is graded (:func:`llava15.eval.judge.mmvet_grade`), the grade file is
written in the evaluator's format, and the total = 100·mean score (mean over runs). Official grade files
(``{id: {"score": [per run]}}``) can be scored directly. Without a judge: skipped, never 0.

lmms-lab/MMVet (``question_id`` ``v1_<n>``, ``question``, ``answer``, ``capability``, ``image``): the same
prompt; the answer record's ``question_id`` is ``n`` as in LLaVA's file; ground truth from the rows.
The confidence interval resamples samples (their judge score averaged over runs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llava15.eval.benchmarks.base import (
    Benchmark,
    Question,
    Source,
    hub_id,
    hub_question,
    require,
    result,
    with_source,
    write_json,
)
from llava15.eval.bootstrap import units
from llava15.eval.judge import mmvet_grade
from llava15.eval.metrics import mmvet_scores


class MMVet(Benchmark):
    name = "mmvet"
    title = "MM-Vet"
    folder = "mm-vet"
    max_new_tokens = 1024
    question_file = "llava-mm-vet.jsonl"
    image_dir = "images"
    judged = True

    def _hub(self, src: Source) -> list[Question]:
        rows = src.table().rows(["question_id", "question"])
        return [hub_question(src, i, _number(r["question_id"]), r["question"], self.max_new_tokens)
                for i, r in enumerate(rows)]  # fmt: skip

    def _ground_truth(self, src: Source) -> dict[str, dict[str, Any]]:
        if src.kind == "hub":
            rows = src.table().rows(["question_id", "question", "answer", "capability"])
            return {f"v1_{_number(r['question_id'])}": {"question": r["question"], "answer": r["answer"],
                    "capability": _capabilities(r["capability"])} for r in rows}  # fmt: skip
        gt_path = require(self.locate(src).root / "mm-vet.json", "MM-Vet ground truth")
        return json.loads(gt_path.read_text(encoding="utf-8"))

    def score(
        self,
        answers: list[dict[str, Any]],
        data_root: str | Path,
        out_dir: Path | None = None,
        judge: Any = None,
    ) -> dict[str, Any]:
        if answers and "score" in answers[0] and "text" not in answers[0]:  # an official grade file
            m = mmvet_scores({str(a["question_id"]): a["score"] for a in answers})
            unit_rows = [[str(a["question_id"]), "", sum(a["score"]) / len(a["score"])] for a in answers]
            return result(self.name, "scored", m["total"], m, judge={"source": "grade file"},
                          bootstrap=units("mean", unit_rows))
        results = {f"v1_{a['question_id']}": a["text"] for a in answers}
        files = {}
        if out_dir is not None:
            files["submission"] = str(write_json(Path(out_dir) / "mmvet_results.json", results, indent=2))
        if judge is None:
            notes = [
                "needs a judge (--judge-url, --judge-model); the results file suits the online evaluator"
            ]
            return result(self.name, "skipped", None, {}, files=files, notes=notes)
        src = self.locate(data_root)
        data = self._ground_truth(src)
        missing = [k for k in data if k not in results]
        if missing:
            raise ValueError(f"MM-Vet: {len(missing)} samples unanswered (first: {missing[:5]})")
        n_runs = judge.runs
        grades: dict[str, dict[str, list[Any]]] = {}
        for sid, item in data.items():
            g = grades.setdefault(sid, {"model": [], "content": [], "score": []})
            for run in range(n_runs):
                score, reply = mmvet_grade(judge, item["question"], item["answer"], results[sid], run)
                g["model"].append(judge.model)
                g["content"].append(reply)
                g["score"].append(score)
        m = mmvet_scores({k: v["score"] for k, v in grades.items()},
                         {k: v.get("capability", []) for k, v in data.items()})  # fmt: skip
        if out_dir is not None:
            files["grades"] = str(
                write_json(Path(out_dir) / f"mmvet_grade-{n_runs}runs.json", grades, indent=4)
            )
        unit_rows = [[k, "", sum(v["score"]) / len(v["score"])] for k, v in grades.items()]
        res = result(self.name, "scored", m["total"], m, files=files, judge=judge.info(self.name),
                     bootstrap=units("mean", unit_rows))  # fmt: skip
        return with_source(res, src)


def _number(question_id: Any) -> Any:
    """``v1_12`` (the Hub's and mm-vet.json's key) -> 12 (LLaVA's question_id)."""
    text = str(question_id)
    return hub_id(text[3:] if text.startswith("v1_") else text)


def _capabilities(value: Any) -> list[str]:
    if isinstance(value, str):
        return [c.strip() for c in value.split(",") if c.strip()]
    return list(value or [])
