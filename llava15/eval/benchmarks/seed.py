"""SEED-Bench (v1): multiple choice, correct iff the answer text equals the letter exactly.

Layout: ``seed_bench/llava-seed-bench.jsonl`` (image paths ``SEED-Bench-image/...`` or, for video
questions, the extracted middle frame ``SEED-Bench-video-image/<type>_<qid>.png``), ``seed_bench/SEED-Bench.json``
(ground truth). As ``convert_seed_for_submission.py``: accuracy per question type, and total =
correct / all questions (unanswered count wrong), also for image-only and video-only.

The paper's SEED number is the total over image + video questions. The value is that total only when
every question type was answered; otherwise it is the accuracy over the answered types' questions, and
the result says what it is (``scope``: ``img`` / ``video`` / ``k of n types``) and is marked as not
comparable with the paper's number (``comparable: false``), so a run without the video frames never
shows its image-only accuracy as the paper's cell.

lmms-lab/SEED-Bench (``question_id``, ``question``, ``choice_a..d``, ``answer``, ``data_type``,
``question_type_id``, ``image`` = a list of frames): LLaVA's prompt (question, ``A. ...`` to ``D. ...``,
the letter instruction); an image question uses its image, a video question the middle of its frames
(``(n-1)//2``) in place of LLaVA's extracted middle frame. The ground truth is the rows' ``answer``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llava15.eval.benchmarks.base import (
    LETTER_ANSWER,
    Benchmark,
    Question,
    Source,
    hub_question,
    require,
    result,
    with_source,
    write_jsonl,
)
from llava15.eval.bootstrap import units
from llava15.eval.metrics import seed_match

_HUB = ["question_id", "question", "choice_a", "choice_b", "choice_c", "choice_d", "answer", "data_type",
        "question_type_id"]  # fmt: skip


class SeedBench(Benchmark):
    name = "seed"
    title = "SEED"
    folder = "seed_bench"
    max_new_tokens = 128
    question_file = "llava-seed-bench.jsonl"
    image_dir = ""
    score_files = ("SEED-Bench.json",)

    def _hub(self, src: Source) -> list[Question]:
        table = src.table()
        lengths = table.list_lengths("image")
        out = []
        for i, r in enumerate(table.rows(_HUB)):
            text = (f"{r['question']}\nA. {r['choice_a']}\nB. {r['choice_b']}\nC. {r['choice_c']}\n"
                    f"D. {r['choice_d']}\n{LETTER_ANSWER}")  # fmt: skip
            frame = None if lengths[i] is None else (lengths[i] - 1) // 2
            out.append(hub_question(src, i, r["question_id"], text, self.max_new_tokens, frame=frame))
        return out

    def _ground_truth(self, src: Source) -> dict[str, Any]:
        if src.kind == "hub":
            rows = src.table().rows(_HUB)
            return {"questions": [{k: r[k] for k in ("question_id", "answer", "data_type", "question_type_id")}
                                  for r in rows]}  # fmt: skip
        path = require(src.root / "SEED-Bench.json", "SEED-Bench ground truth")
        return json.loads(path.read_text(encoding="utf-8"))

    def score(
        self,
        answers: list[dict[str, Any]],
        data_root: str | Path | Source,
        out_dir: Path | None = None,
        judge: Any = None,
    ) -> dict[str, Any]:
        src = self.locate(data_root)
        data = self._ground_truth(src)
        names = {v: k for k, v in data.get("question_type", {}).items()}
        texts = {str(a["question_id"]): a["text"] for a in answers}
        counts: dict[str, dict[Any, list[int]]] = {"all": {}, "image": {}, "video": {}}
        hits: dict[str, int] = {}
        for q in data["questions"]:
            hit = int(seed_match(texts.get(str(q["question_id"])), q["answer"]))
            hits[str(q["question_id"])] = hit
            for split in ("all", q.get("data_type", "image")):
                counts.setdefault(split, {}).setdefault(q["question_type_id"], []).append(hit)

        def acc(split: str) -> float | None:
            h = [h for v in counts[split].values() for h in v]
            return 100 * sum(h) / len(h) if h else None

        metrics: dict[str, Any] = {f"accuracy_{s}": acc(s) for s in ("all", "image", "video")}
        metrics["per_type"] = {
            names.get(t, str(t)): 100 * sum(v) / len(v) for t, v in sorted(counts["all"].items())
        }
        answered = {q["question_type_id"] for q in data["questions"] if str(q["question_id"]) in texts}
        types = {q["question_type_id"]: q.get("data_type", "image") for q in data["questions"]}
        included = [q for q in data["questions"] if q["question_type_id"] in answered]
        notes: list[str] = []
        if answered == set(types):
            scope, value = "all", metrics["accuracy_all"]
        else:
            kinds = {types[t] for t in answered}
            image_types = {t for t, k in types.items() if k == "image"}
            video_types = set(types) - image_types
            scope = ("img" if answered == image_types else "video" if answered == video_types and video_types
                     else f"{len(answered)} of {len(types)} types")  # fmt: skip
            value = 100 * sum(hits[str(q["question_id"])] for q in included) / len(included) if included else None
            missing = sorted(names.get(t, str(t)) for t in set(types) - answered)
            what = {"img": "image-only accuracy", "video": "video-only accuracy"}.get(
                scope, f"accuracy over the {'/'.join(sorted(kinds))} questions of the answered types")
            notes.append(f"not every question type answered ({', '.join(missing)} missing): the value is the "
                         f"{what} ({scope}), not comparable with the paper's image+video total")
        unit_rows = [[str(q["question_id"]), names.get(q["question_type_id"], str(q["question_type_id"])),
                      hits[str(q["question_id"])]] for q in included]  # fmt: skip
        files = {}
        if out_dir is not None:
            upload = [{"question_id": q["question_id"], "prediction": texts.get(str(q["question_id"]), "")}
                      for q in data["questions"]]  # fmt: skip
            path_out = Path(out_dir) / "seed_bench_upload.jsonl"
            write_jsonl(path_out, upload)
            files["submission"] = str(path_out)
        res = result(self.name, "scored", value, metrics, files=files, notes=notes, scope=scope,
                     comparable=scope == "all", bootstrap=units("mean", unit_rows))  # fmt: skip
        return with_source(res, src)
