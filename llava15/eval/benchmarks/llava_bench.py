"""LLaVA-Bench (in-the-Wild): 60 open questions judged against GPT-4 reference answers.

Layout: ``llava-bench-in-the-wild/{questions.jsonl, context.jsonl, answers_gpt4.jsonl, images/}``.
Prompt: the question as is (``model_vqa.py``), 1024 new tokens. Score: each answer is reviewed by the
judge (:mod:`llava15.eval.judge`), review files are written in the official format
(``reviews/<model>-eval<k>.jsonl`` with ``tuple`` = [reference score, model score]), and the reported
number is the mean over judge runs of the ``all`` relative score (``summarize_gpt_review.py``).
Official review files can be scored directly (answers with a ``tuple`` field, one list per run).
Without a judge the benchmark is reported as skipped, never as 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llava15.eval.benchmarks.base import (
    Benchmark,
    read_jsonl,
    require,
    result,
    write_jsonl,
)
from llava15.eval.judge import llava_bench_content, llava_bench_review
from llava15.eval.metrics import llava_bench_scores


class LlavaBench(Benchmark):
    name = "llava_bench"
    title = "LLaVA-W"
    folder = "llava-bench-in-the-wild"
    max_new_tokens = 1024
    question_file = "questions.jsonl"
    image_dir = "images"
    judged = True

    def score(
        self,
        answers: list[dict[str, Any]],
        data_root: str | Path,
        out_dir: Path | None = None,
        judge: Any = None,
    ) -> dict[str, Any]:
        if answers and "tuple" in answers[0]:  # official review records, possibly several runs
            runs: dict[int, list[tuple[str, list[float]]]] = {}
            for r in answers:
                runs.setdefault(int(r.get("_run", 0)), []).append((r.get("category", "all"), r["tuple"]))
            m = llava_bench_scores([runs[k] for k in sorted(runs)])
            return result(self.name, "scored", m["relative_score"], m, judge={"source": "review files"})
        if judge is None:
            return result(
                self.name, "skipped", None, {}, notes=["needs a judge (--judge-url, --judge-model)"]
            )
        root = self.root(data_root)
        questions = read_jsonl(require(root / "questions.jsonl", "LLaVA-Bench questions"))
        refs = read_jsonl(require(root / "answers_gpt4.jsonl", "LLaVA-Bench GPT-4 answers"))
        contexts = {c["image"]: c for c in read_jsonl(require(root / "context.jsonl", "LLaVA-Bench context"))}
        mine = {str(a["question_id"]): a for a in answers}
        missing = [q["question_id"] for q in questions if str(q["question_id"]) not in mine]
        if missing:
            raise ValueError(f"LLaVA-Bench: {len(missing)} questions unanswered (first: {missing[:5]})")
        ref_by_id = {str(r["question_id"]): r for r in refs}
        n_runs = judge.runs
        model_id = str(answers[0].get("model_id", "model")).replace("/", "_") if answers else "model"
        all_runs, files = [], {}
        for run in range(n_runs):
            reviews = []
            for i, q in enumerate(questions):  # the official script zips the three files by position
                ref = ref_by_id.get(str(q["question_id"]), refs[i])
                ans = mine[str(q["question_id"])]
                content = llava_bench_content(
                    contexts[q["image"]]["caption"], q["text"], ref["text"], ans["text"]
                )
                review, pair = llava_bench_review(judge, content, run)
                reviews.append({
                    "id": i + 1, "question_id": q["question_id"], "answer1_id": ref.get("answer_id", ref["question_id"]),
                    "answer2_id": ans.get("answer_id", ans["question_id"]), "category": "llava_bench_" + q["category"],
                    "content": review, "tuple": pair,
                })  # fmt: skip
            all_runs.append([(r["category"], r["tuple"]) for r in reviews])
            if out_dir is not None:
                path = Path(out_dir) / "llava_bench_reviews" / f"{model_id}-eval{run + 1}.jsonl"
                write_jsonl(path, reviews)
                files[f"reviews_run{run + 1}"] = str(path)
        m = llava_bench_scores(all_runs)
        return result(self.name, "scored", m["relative_score"], m, files=files, judge=judge.info(self.name))
