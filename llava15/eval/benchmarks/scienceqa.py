"""ScienceQA-IMG: the paper's number is accuracy on the test problems whose prompt holds an image.

Layout: ``scienceqa/llava_test_CQM-A.json`` (a JSON list, LLaVA conversation records), images
``scienceqa/images/test/<pid>/image.png``, and for scoring ``scienceqa/problems.json`` +
``scienceqa/pid_splits.json`` (official). Without those two, choices count and answer are read back from
the question file (``A. `` … option markers and the ``gpt`` turn), which gives the same numbers.

Prompt = ``model_vqa_science.py --single-pred-prompt``: ``<image>`` removed and the text stripped,
``<image>\\n`` re-added in front for image problems, then ``\\n`` + the option-letter instruction; 1024
new tokens. Unlike the other scripts the recorded ``prompt`` is the whole message, ``<image>\\n`` included.
The script opens images without ``.convert('RGB')``: under ``--protocol official`` they are padded in
their own mode first (``pads_before_rgb``), which changes palette PNGs.

lmms-lab/ScienceQA config ``ScienceQA-IMG`` split ``test`` (``image``, ``question``, ``choices``,
``answer`` index, ``hint``): the CQM text is rebuilt as LLaVA's converter writes it (``Context: {hint}``
line only for a non-empty hint, the question, ``A. {choice}`` lines); the split has no problem ids, so
``question_id`` is the row number. Every row has an image, so accuracy = IMG accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llava15.eval.benchmarks.base import (
    IMAGE_PREFIX,
    LETTER_ANSWER,
    Benchmark,
    Question,
    Source,
    hub_question,
    require,
    result,
    with_source,
)
from llava15.eval.bootstrap import units
from llava15.eval.metrics import scienceqa_parse, scienceqa_scores

_LETTERS = "ABCDE"


def count_choices(human_value: str) -> int:
    """Number of ``\\nA. ``, ``\\nB. `` … option markers, in order, from the last ``\\nA. ``."""
    pos = human_value.rfind("\nA. ")
    if pos < 0:
        return 0
    n = 1
    for letter in _LETTERS[1:]:
        nxt = human_value.find(f"\n{letter}. ", pos + 1)
        if nxt < 0:
            break
        n, pos = n + 1, nxt
    return n


class ScienceQA(Benchmark):
    name = "scienceqa"
    title = "SQA-IMG"
    folder = "scienceqa"
    max_new_tokens = 1024
    question_file = "llava_test_CQM-A.json"
    pads_before_rgb = True

    def _records(self, src: Source) -> list[dict[str, Any]]:
        if src.kind == "hub":
            return [hub_record(str(i), r) for i, r in
                    enumerate(src.table().rows(["question", "choices", "answer", "hint"]))]  # fmt: skip
        path = require(src.question_file, "ScienceQA question file")
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def _questions(self, src: Source, make) -> list[Question]:
        out = []
        for n, rec in enumerate(self._records(src)):
            text = rec["conversations"][0]["value"].replace("<image>", "").strip()
            has_image = "image" in rec
            prompt = (IMAGE_PREFIX + text if has_image else text) + "\n" + LETTER_ANSWER
            out.append(make(n, rec, prompt, has_image))
        return out

    def _official(self, src: Source) -> list[Question]:
        image_dir = src.root / "images" / "test"
        return self._questions(src, lambda n, rec, prompt, has_image: Question(
            rec["id"], image_dir / rec["image"] if has_image else None, prompt, self.max_new_tokens,
            {"record_prompt": prompt}))  # fmt: skip

    def _hub(self, src: Source) -> list[Question]:
        def make(n, rec, prompt, has_image):
            q = hub_question(src, n, rec["id"], prompt, self.max_new_tokens)
            q.prompt_text = prompt  # the whole message is the record (the <image> prefix is already in it)
            return q

        return self._questions(src, make)

    def _problems(self, src: Source) -> tuple[list[str], dict[str, tuple[int, int, bool]]]:
        """Test pids in split order and ``pid → (answer index, n choices, has image)``."""
        root = src.root
        records = {r["id"]: r for r in self._records(src)}
        if src.kind == "hub":
            return list(records), {pid: (r["answer_index"], r["n_choices"], True) for pid, r in records.items()}
        if (root / "problems.json").exists() and (root / "pid_splits.json").exists():
            problems = json.loads((root / "problems.json").read_text(encoding="utf-8"))
            pids = json.loads((root / "pid_splits.json").read_text(encoding="utf-8"))["test"]
            info = {
                p: (problems[p]["answer"], len(problems[p]["choices"]), "image" in records.get(p, {}))
                for p in pids
            }
            return pids, info
        info = {}
        for pid, rec in records.items():
            n = count_choices(rec["conversations"][0]["value"])
            info[pid] = (_LETTERS.index(rec["conversations"][1]["value"]), n, "image" in rec)
        return list(records), info

    def score(
        self,
        answers: list[dict[str, Any]],
        data_root: str | Path,
        out_dir: Path | None = None,
        judge: Any = None,
    ) -> dict[str, Any]:
        src = self.locate(data_root)
        pids, info = self._problems(src)
        by_pid = {str(a["question_id"]): a for a in answers}
        rows = []
        for pid in pids:
            answer, n_choices, has_image = info[pid]
            a = by_pid.get(pid)
            # The official IMG subset is decided by the recorded prompt; answers without a prompt
            # (other producers) fall back to whether the problem has an image.
            in_img = has_image if a is None or "prompt" not in a else "<image>" in a["prompt"]
            rows.append((None if a is None else a["text"], answer, n_choices, in_img))
        m = scienceqa_scores(rows)
        notes = [] if len(by_pid) >= len(pids) else [f"{len(pids) - len(by_pid)} problems unanswered"]
        unit_rows = [[pid, "", int(scienceqa_parse(text, n) == ans)]
                     for pid, (text, ans, n, img) in zip(pids, rows) if img and text is not None]  # fmt: skip
        res = result(self.name, "scored", m["img_accuracy"], m, notes=notes, bootstrap=units("mean", unit_rows))
        return with_source(res, src)


def hub_record(pid: str, row: dict[str, Any]) -> dict[str, Any]:
    """A Hub row as the record LLaVA's converter writes (``llava_test_CQM-A.json``), with the answer."""
    lines = ["<image>"]
    if row["hint"]:
        lines.append(f"Context: {row['hint']}")
    lines.append(row["question"])
    lines += [f"{_LETTERS[i]}. {c}" for i, c in enumerate(row["choices"])]
    return {"id": pid, "image": f"{pid}/image.png",
            "conversations": [{"from": "human", "value": "\n".join(lines)},
                              {"from": "gpt", "value": _LETTERS[int(row["answer"])]}],
            "answer_index": int(row["answer"]), "n_choices": len(row["choices"])}  # fmt: skip
