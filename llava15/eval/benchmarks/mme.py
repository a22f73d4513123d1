"""MME: 14 yes/no subtasks; the paper reports the perception score (cognition also computed).

Layout: ``MME/llava_mme.jsonl`` and ``MME/MME_Benchmark_release_version/<subtask>/`` (images and the
``question\\tanswer`` ``.txt`` files side by side, or in ``images/`` and ``questions_answers_YN/``).
Scoring = ``convert_answer_to_mme.py`` (ground truth looked up by subtask, ``.txt`` file and the
recorded prompt with the short-answer suffix swapped back for `` Please answer yes or no.``) followed by
``eval_tool/calculation.py`` (consecutive lines of a subtask, in answer order, form an image's pair).

lmms-lab/MME (``question_id`` = the image path, ``question`` with `` Please answer yes or no.``,
``answer``, ``category``, ``image``): the prompt is the question with that sentence replaced by the
short-answer suffix (what ``llava_mme.jsonl`` holds and lmms-eval builds); the ground truth is keyed by
the same (subtask, ``.txt`` name, question) as the release folder's, so scoring is unchanged.
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
    recorded_prompts,
    require,
    result,
    with_source,
)
from llava15.eval.bootstrap import units
from llava15.eval.metrics import MME_PERCEPTION, mme_parse, mme_scores

_SUFFIX = " Please answer yes or no."


def read_ground_truth(bench_dir: Path) -> dict[tuple[str, str, str], str]:
    """``{(subtask, qa file name, question): answer}`` from the release folder."""
    gt = {}
    for category in sorted(p for p in bench_dir.iterdir() if p.is_dir()):
        qa_dir = category / "questions_answers_YN" if (category / "images").is_dir() else category
        for txt in sorted(qa_dir.glob("*.txt")):
            for lineno, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                fields = line.strip().split("\t")
                if len(fields) != 2:
                    raise ValueError(f"{txt}: line {lineno} should be 'question<TAB>answer', got {line!r}")
                gt[(category.name, txt.name, fields[0])] = fields[1]
    return gt


class Mme(Benchmark):
    name = "mme"
    title = "MME"
    folder = "MME"
    max_new_tokens = 128
    question_file = "llava_mme.jsonl"
    image_dir = "MME_Benchmark_release_version"
    score_files = ("MME_Benchmark_release_version",)

    def _hub(self, src: Source) -> list[Question]:
        rows = src.table().rows(["question_id", "question", "category"])
        return [hub_question(src, i, r["question_id"], r["question"].strip().replace(_SUFFIX, "") + "\n" + SHORT_ANSWER,
                             self.max_new_tokens, image_key=r["question_id"], category=r["category"])
                for i, r in enumerate(rows)]  # fmt: skip

    def _ground_truth(self, src: Source) -> dict[tuple[str, str, str], str]:
        if src.kind == "hub":
            rows = src.table().rows(["question_id", "question", "answer", "category"])
            return {(r["category"], Path(r["question_id"]).stem + ".txt", r["question"].strip()): r["answer"]
                    for r in rows}  # fmt: skip
        return read_ground_truth(require(src.root / "MME_Benchmark_release_version", "MME release folder"))

    def score(
        self,
        answers: list[dict[str, Any]],
        data_root: str | Path,
        out_dir: Path | None = None,
        judge: Any = None,
    ) -> dict[str, Any]:
        src = self.locate(data_root)
        gt = self._ground_truth(src)
        qfile = src.question_file
        questions = read_jsonl(qfile) if qfile is not None and qfile.exists() else []
        hub_categories = {}
        if src.kind == "hub":
            rows = src.table().rows(["question_id", "question", "category"])
            hub_categories = {str(r["question_id"]): r["category"] for r in rows}
            questions = [{"question_id": r["question_id"], "text": q.extra["record_prompt"]}
                         for r, q in zip(rows, self._hub(src))]  # fmt: skip
        subtasks: dict[str, list[tuple[str, str, str, str]]] = {}
        keys: dict[str, list[str]] = {}
        for a, prompt in zip(answers, recorded_prompts(answers, questions)):
            qid = str(a["question_id"])
            category = hub_categories.get(qid) or qid.split("/")[0]
            file = Path(qid).stem + ".txt"
            question = prompt.replace(SHORT_ANSWER, "").strip() + _SUFFIX
            if (category, file, question) not in gt:  # a few MME questions have two spaces
                question = question[: -len(_SUFFIX)] + "  Please answer yes or no."
            if (category, file, question) not in gt:
                raise ValueError(f"MME: no ground truth for {qid!r} question {question!r}")
            subtasks.setdefault(category, []).append(
                (file, question, gt[(category, file, question)], a["text"])
            )
            keys.setdefault(category, []).append(qid)
        notes = []
        for category, rows in subtasks.items():
            if len(rows) % 2:  # a partial run (--limit) can end inside an image's pair: drop the half pair
                notes.append(f"{category}: last line has no pair (partial run); left out")
                rows.pop()
        scores = mme_scores(subtasks)
        files = {}
        if out_dir is not None:  # the eval_tool input files, for anyone who wants to run calculation.py
            tool_dir = Path(out_dir) / "mme_eval_tool_results"
            tool_dir.mkdir(parents=True, exist_ok=True)
            for category, rows in subtasks.items():
                with open(tool_dir / f"{category}.txt", "w", encoding="utf-8") as f:
                    f.writelines("\t".join(r) + "\n" for r in rows)
            files["eval_tool_results"] = str(tool_dir)
        pairs = [[f"{keys[cat][i]}#{i // 2}", cat, sum(mme_parse(p) == gt_.lower() for *_, gt_, p in rows[i : i + 2])]
                 for cat, rows in subtasks.items() for i in range(0, len(rows), 2)]  # fmt: skip
        boot = {**units("mme", pairs, MME_PERCEPTION), "unit": "image pair (within subtask)"}
        res = result(self.name, "scored", scores["perception"], scores, files=files, notes=notes, bootstrap=boot)
        return with_source(res, src)
