"""ScienceQA-IMG: the paper's number is accuracy on the test problems whose prompt holds an image.

Layout: ``scienceqa/llava_test_CQM-A.json`` (a JSON list, LLaVA conversation records), images
``scienceqa/images/test/<pid>/image.png``, and for scoring ``scienceqa/problems.json`` +
``scienceqa/pid_splits.json`` (official). Without those two, choices count and answer are read back from
the question file (``A. `` … option markers and the ``gpt`` turn), which gives the same numbers.

Prompt = ``model_vqa_science.py --single-pred-prompt``: ``<image>`` removed and the text stripped,
``<image>\\n`` re-added in front for image problems, then ``\\n`` + the option-letter instruction; 1024
new tokens. Unlike the other scripts the recorded ``prompt`` is the whole message, ``<image>\\n`` included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llava15.eval.benchmarks.base import IMAGE_PREFIX, LETTER_ANSWER, Benchmark, Question, require, result
from llava15.eval.metrics import scienceqa_scores

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

    def _records(self, data_root) -> list[dict[str, Any]]:
        path = require(self.root(data_root) / "llava_test_CQM-A.json", "ScienceQA question file")
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def load(self, data_root: str | Path) -> list[Question]:
        image_dir = self.root(data_root) / "images" / "test"
        out = []
        for rec in self._records(data_root):
            text = rec["conversations"][0]["value"].replace("<image>", "").strip()
            has_image = "image" in rec
            prompt = (IMAGE_PREFIX + text if has_image else text) + "\n" + LETTER_ANSWER
            image = image_dir / rec["image"] if has_image else None
            out.append(Question(rec["id"], image, prompt, self.max_new_tokens, {"record_prompt": prompt}))
        return out

    def _problems(self, data_root) -> tuple[list[str], dict[str, tuple[int, int, bool]]]:
        """Test pids in split order and ``pid → (answer index, n choices, has image)``."""
        root = self.root(data_root)
        records = {r["id"]: r for r in self._records(data_root)}
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
        pids, info = self._problems(data_root)
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
        return result(self.name, "scored", m["img_accuracy"], m, notes=notes)
