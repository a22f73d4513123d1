"""Nothing silently lost: the data gate before the first step and the data report after the last.

`check_bad_fraction(index, max_fraction, image_folder)` stops a run before it trains when more than
`data.max_bad_fraction` of the records failed the index-time checks (structure, roles, texts, image
count, image files), with a summary by reason and the first examples; a folder that holds none of the
images (a wrong `data.image_folder`) is named with the count of missing images. `DataReport` counts
what training used and skipped (index-time and later, e.g. an unreadable image met in a loader worker)
and writes `output_dir/data_report.json`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from llava15.data.conversation import DataError


class BadDataError(DataError):
    """More records are unusable than `data.max_bad_fraction` allows."""


def check_bad_fraction(index: Any, max_fraction: float, image_folder: str | None) -> None:
    problems = index.problems
    total = len(index) + problems.total
    if not problems.total or problems.total <= max_fraction * total:
        return
    by_reason = ", ".join(f"{n} {reason}" for reason, n in problems.counts.most_common())
    examples = [problems.messages[rid] for ids in problems.examples.values() for rid in ids[:2]][:4]
    missing = problems.counts.get("missing_image", 0)
    hint = ""
    if missing:
        hint = (f" {missing} image file(s) are not under data.image_folder={image_folder!r}: is that the folder "
                "the records' image paths are relative to?")
    raise BadDataError(f"{problems.total} of {total} records ({problems.total / total:.1%}) are unusable, more than "
                       f"data.max_bad_fraction={max_fraction} allows ({by_reason}).{hint} First problems: "
                       + " | ".join(examples) + " — fix the data or raise data.max_bad_fraction",
                       source=index.path, reason="too_many_bad_records")


class DataReport:
    """What a run used and skipped, by reason (index-time problems plus those met while training)."""

    def __init__(self, index: Any) -> None:
        self.index = index
        self.late: Counter = Counter()
        self.late_examples: list[str] = []

    def add_skipped(self, skipped: list[dict]) -> None:
        for s in skipped:
            self.late[s["reason"]] += 1
            if len(self.late_examples) < 10:
                self.late_examples.append(s["error"])

    def merge(self, other: dict) -> None:
        self.late.update(other.get("late", {}))
        self.late_examples += other.get("late_examples", [])[:10 - len(self.late_examples)]

    def to_json(self) -> dict:
        problems = self.index.problems
        skipped = Counter(problems.counts) + self.late
        return {"data": self.index.path, "records": len(self.index) + problems.total,
                "used": len(self.index) - sum(self.late.values()), "skipped": sum(skipped.values()),
                "skipped_by_reason": dict(skipped.most_common()),
                "at_index_time": dict(problems.counts), "while_training": dict(self.late),
                "examples": {**{r: [problems.messages[i] for i in ids[:3]] for r, ids in problems.examples.items()},
                             **({"while_training": self.late_examples} if self.late_examples else {})}}

    def write(self, out: Path) -> Path:
        path = Path(out) / "data_report.json"
        path.write_text(json.dumps(self.to_json(), indent=2))
        return path
