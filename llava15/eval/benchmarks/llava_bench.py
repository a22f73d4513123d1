"""LLaVA-Bench (in-the-Wild): 60 open questions judged against GPT-4 reference answers.

Layout: ``llava-bench-in-the-wild/{questions.jsonl, context.jsonl, answers_gpt4.jsonl, images/}``.
Prompt: the question as is (``model_vqa.py``), 1024 new tokens. Score: each answer is reviewed by the
judge (:mod:`llava15.eval.judge`), review files are written in the official format
(``reviews/<model>-eval<k>.jsonl`` with ``tuple`` = [reference score, model score]), and the reported
number is the mean over judge runs of the ``all`` relative score (``summarize_gpt_review.py``).
Official review files can be scored directly (answers with a ``tuple`` field, one list per run).
Without a judge the benchmark is reported as skipped, never as 0.

lmms-lab/llava-bench-in-the-wild (``question_id``, ``question``, ``image``, ``caption``, ``gpt_answer``,
``category``): the same prompt, judge content and score; ``caption`` is the context, ``gpt_answer`` the
reference. The confidence interval resamples questions (score = 100·Σmodel/Σreference of the
run-averaged judge scores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llava15.eval.benchmarks.base import (
    Benchmark,
    Question,
    Source,
    hub_id,
    hub_question,
    read_jsonl,
    require,
    result,
    with_source,
    write_jsonl,
)
from llava15.eval.bootstrap import units
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
    score_files = ("answers_gpt4.jsonl", "context.jsonl")

    def _hub(self, src: Source) -> list[Question]:
        rows = src.table().rows(["question_id", "question", "category"])
        return [hub_question(src, i, hub_id(r["question_id"]), r["question"], self.max_new_tokens,
                             category=r["category"]) for i, r in enumerate(rows)]  # fmt: skip

    def _reference(self, src: Source) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any]]:
        """Questions, GPT-4 reference answers and captions, in question order."""
        if src.kind == "hub":
            rows = src.table().rows(["question_id", "question", "category", "caption", "gpt_answer"])
            questions = [{"question_id": hub_id(r["question_id"]), "text": r["question"], "category": r["category"]}
                         for r in rows]  # fmt: skip
            refs = [{"question_id": q["question_id"], "text": r["gpt_answer"]} for q, r in zip(questions, rows)]
            return questions, refs, [r["caption"] for r in rows]
        root = src.root
        questions = read_jsonl(require(src.question_file, "LLaVA-Bench questions"))
        refs = read_jsonl(require(root / "answers_gpt4.jsonl", "LLaVA-Bench GPT-4 answers"))
        contexts = {c["image"]: c for c in read_jsonl(require(root / "context.jsonl", "LLaVA-Bench context"))}
        ref_by_id = {str(r["question_id"]): r for r in refs}
        # the official script zips the three files by position; an id match is preferred when present
        refs = [ref_by_id.get(str(q["question_id"]), refs[i]) for i, q in enumerate(questions)]
        return questions, refs, [contexts[q["image"]]["caption"] for q in questions]

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
            order = [r for r in answers if int(r.get("_run", 0)) == 0]
            unit_rows = []
            for i, r in enumerate(order):
                pairs = [runs[k][i][1] for k in sorted(runs) if i < len(runs[k])]
                unit_rows.append([str(r.get("question_id", i)), r.get("category", ""),
                                  sum(p[1] for p in pairs) / len(pairs), sum(p[0] for p in pairs) / len(pairs)])
            return result(self.name, "scored", m["relative_score"], m, judge={"source": "review files"},
                          bootstrap=units("ratio", unit_rows))
        if judge is None:
            return result(
                self.name, "skipped", None, {}, notes=["needs a judge (--judge-url, --judge-model)"]
            )
        src = self.locate(data_root)
        questions, refs, captions = self._reference(src)
        mine = {str(a["question_id"]): a for a in answers}
        missing = [q["question_id"] for q in questions if str(q["question_id"]) not in mine]
        if missing:
            raise ValueError(f"LLaVA-Bench: {len(missing)} questions unanswered (first: {missing[:5]})")
        n_runs = judge.runs
        model_id = str(answers[0].get("model_id", "model")).replace("/", "_") if answers else "model"
        all_runs, files = [], {}
        for run in range(n_runs):
            reviews = []
            for i, q in enumerate(questions):
                ref = refs[i]
                ans = mine[str(q["question_id"])]
                content = llava_bench_content(captions[i], q["text"], ref["text"], ans["text"])
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
        unit_rows = [[str(q["question_id"]), q["category"], sum(run[i][1][1] for run in all_runs) / n_runs,
                      sum(run[i][1][0] for run in all_runs) / n_runs] for i, q in enumerate(questions)]  # fmt: skip
        res = result(self.name, "scored", m["relative_score"], m, files=files, judge=judge.info(self.name),
                     bootstrap=units("ratio", unit_rows))  # fmt: skip
        return with_source(res, src)
