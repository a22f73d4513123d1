"""SEED-Bench (v1): multiple choice, correct iff the answer text equals the letter exactly.

Layout: ``seed_bench/llava-seed-bench.jsonl`` (image paths ``SEED-Bench-image/...`` or, for video
questions, the extracted middle frame ``SEED-Bench-video-image/<type>_<qid>.png``), ``seed_bench/SEED-Bench.json``
(ground truth). As ``convert_seed_for_submission.py``: accuracy per question type, and total =
correct / all questions (unanswered count wrong), also for image-only and video-only; the paper reports
the total over image + video. When no video question was answered the image-only accuracy is reported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llava15.eval.benchmarks.base import Benchmark, require, result, write_jsonl
from llava15.eval.metrics import seed_match


class SeedBench(Benchmark):
    name = "seed"
    title = "SEED"
    folder = "seed_bench"
    max_new_tokens = 128
    question_file = "llava-seed-bench.jsonl"
    image_dir = ""

    def score(
        self,
        answers: list[dict[str, Any]],
        data_root: str | Path,
        out_dir: Path | None = None,
        judge: Any = None,
    ) -> dict[str, Any]:
        path = require(self.root(data_root) / "SEED-Bench.json", "SEED-Bench ground truth")
        data = json.loads(path.read_text(encoding="utf-8"))
        names = {v: k for k, v in data.get("question_type", {}).items()}
        texts = {str(a["question_id"]): a["text"] for a in answers}
        counts: dict[str, dict[Any, list[int]]] = {"all": {}, "image": {}, "video": {}}
        for q in data["questions"]:
            hit = int(seed_match(texts.get(str(q["question_id"])), q["answer"]))
            for split in ("all", q.get("data_type", "image")):
                counts.setdefault(split, {}).setdefault(q["question_type_id"], []).append(hit)

        def acc(split: str) -> float | None:
            hits = [h for v in counts[split].values() for h in v]
            return 100 * sum(hits) / len(hits) if hits else None

        metrics = {f"accuracy_{s}": acc(s) for s in ("all", "image", "video")}
        metrics["per_type"] = {
            names.get(t, str(t)): 100 * sum(v) / len(v) for t, v in sorted(counts["all"].items())
        }
        video_answered = any(
            str(q["question_id"]) in texts for q in data["questions"] if q.get("data_type") == "video"
        )
        value, notes = metrics["accuracy_all"], []
        if not video_answered:
            value = metrics["accuracy_image"]
            notes.append(
                "no video question answered: value is image-only accuracy (the paper's 61.6 is image+video)"
            )
        files = {}
        if out_dir is not None:
            upload = [{"question_id": q["question_id"], "prediction": texts.get(str(q["question_id"]), "")}
                      for q in data["questions"]]  # fmt: skip
            path_out = Path(out_dir) / "seed_bench_upload.jsonl"
            write_jsonl(path_out, upload)
            files["submission"] = str(path_out)
        return result(self.name, "scored", value, metrics, files=files, notes=notes)
