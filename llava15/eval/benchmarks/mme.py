"""MME: 14 yes/no subtasks; the paper reports the perception score (cognition also computed).

Layout: ``MME/llava_mme.jsonl`` and ``MME/MME_Benchmark_release_version/<subtask>/`` (images and the
``question\\tanswer`` ``.txt`` files side by side, or in ``images/`` and ``questions_answers_YN/``).
Scoring = ``convert_answer_to_mme.py`` (ground truth looked up by subtask, ``.txt`` file and the
recorded prompt with the short-answer suffix swapped back for `` Please answer yes or no.``) followed by
``eval_tool/calculation.py`` (consecutive lines of a subtask, in answer order, form an image's pair).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llava15.eval.benchmarks.base import (
    SHORT_ANSWER,
    Benchmark,
    read_jsonl,
    recorded_prompts,
    require,
    result,
)
from llava15.eval.metrics import mme_scores

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

    def score(
        self,
        answers: list[dict[str, Any]],
        data_root: str | Path,
        out_dir: Path | None = None,
        judge: Any = None,
    ) -> dict[str, Any]:
        root = self.root(data_root)
        gt = read_ground_truth(require(root / "MME_Benchmark_release_version", "MME release folder"))
        questions = read_jsonl(root / "llava_mme.jsonl") if (root / "llava_mme.jsonl").exists() else []
        subtasks: dict[str, list[tuple[str, str, str, str]]] = {}
        for a, prompt in zip(answers, recorded_prompts(answers, questions)):
            qid = str(a["question_id"])
            category = qid.split("/")[0]
            file = Path(qid).stem + ".txt"
            question = prompt.replace(SHORT_ANSWER, "").strip() + _SUFFIX
            if (category, file, question) not in gt:  # a few MME questions have two spaces
                question = question[: -len(_SUFFIX)] + "  Please answer yes or no."
            if (category, file, question) not in gt:
                raise ValueError(f"MME: no ground truth for {qid!r} question {question!r}")
            subtasks.setdefault(category, []).append(
                (file, question, gt[(category, file, question)], a["text"])
            )
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
        return result(self.name, "scored", scores["perception"], scores, files=files, notes=notes)
