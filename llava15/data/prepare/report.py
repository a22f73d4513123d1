"""The check at the end of `prepare`: every record against the images on disk, per source, and the
filtered record file that leaves out records whose images cannot be had.

`check_against_disk(stage, root)` streams the record file once. Each record gets the checks of
`data check` (structure, roles, texts, `<image>` count, paths inside the image root) and each distinct
image is looked up on disk and its header decoded, once. Per source (by path prefix) it counts the
distinct images the records expect, those present and readable, those missing (absent or
unreadable) and the bytes present. When any record lacks an image, the records whose images are all
present are written, byte for byte as in the original, to `<name>_available.json` beside it.
"""

from __future__ import annotations

import os
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from llava15.data.conversation import DataError
from llava15.data.dataset import Problems, check_record, image_path
from llava15.data.formats import record_images, scan_json
from llava15.data.prepare.sources import Stage

EXAMPLES = 5


@dataclass
class SourceCount:
    expected: int = 0
    present: int = 0
    unreadable: int = 0
    bytes: int = 0
    missing_examples: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"expected": self.expected, "present": self.present, "missing": self.expected - self.present,
                "unreadable": self.unreadable, "bytes": self.bytes, "missing_examples": self.missing_examples}


def _write_subset(records_file: Path, spans: array, out_path: Path) -> None:
    """A JSON list of the records at `spans` (offset, length pairs), copied byte for byte."""
    tmp = out_path.with_name(out_path.name + ".tmp")
    with open(records_file, "rb") as raw, open(tmp, "wb") as out:
        out.write(b"[\n")
        for k in range(0, len(spans), 2):
            raw.seek(spans[k])
            out.write((b",\n" if k else b"") + raw.read(spans[k + 1]))
        out.write(b"\n]\n")
    os.replace(tmp, out_path)


def available_path(records: Path) -> Path:
    return records.with_name(records.stem + "_available" + records.suffix)


def _probe(path: Path) -> tuple[bool, bool, int]:
    """(present, readable, bytes) of one image file: its header must decode."""
    from PIL import Image

    try:
        size = path.stat().st_size
    except OSError:
        return False, False, 0
    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 - the header decodes: the file is an image
        return True, True, size
    except Exception:
        return True, False, size


def check_against_disk(stage: Stage, root: Path, quiet: bool = False) -> dict:
    """The `records` and `sources` sections of `prepare_report.json` (see the module docstring)."""
    records_file = root / stage.records.dest
    image_root = root / stage.image_root
    sources: dict[str, SourceCount] = {s: SourceCount() for s in stage.sources}
    seen: dict[str, bool] = {}
    problems, modality = Problems(), Counter()
    total = 0
    kept = array("q")  # byte offset and length of each record to keep, in order
    with tqdm(unit="rec", desc=f"check {records_file.name}", disable=quiet, dynamic_ncols=True) as bar:
        for index, offset, length, record in scan_json(records_file):
            total += 1
            bar.update(1)
            try:
                check_record(record, index, str(records_file), image_root, check_files=False)
            except DataError as err:
                problems.add(err, str(record.get("id", index)) if isinstance(record, dict) else str(index))
            images = ([i for i in record_images(record) if isinstance(i, str)]
                      if isinstance(record, dict) else [])
            modality["text-only" if not images else "with images"] += 1
            ok = True
            for rel in images:
                if rel not in seen:
                    try:
                        path = image_path(image_root, rel, str(record.get("id", index)))
                        present, readable, size = _probe(path)
                    except DataError:
                        present, readable, size = False, False, 0
                    count = sources.setdefault(stage.source_of(rel), SourceCount())
                    count.expected += 1
                    if readable:
                        count.present += 1
                        count.bytes += size
                    else:
                        count.unreadable += present
                        if len(count.missing_examples) < EXAMPLES:
                            count.missing_examples.append(rel)
                    seen[rel] = readable
                ok = ok and seen[rel]
            if ok:
                kept.extend((offset, length))
    out_path = available_path(records_file)
    dropped = total - len(kept) // 2
    if dropped:
        _write_subset(records_file, kept, out_path)
    else:
        out_path.unlink(missing_ok=True)  # a stale filtered file from an earlier, incomplete run
    return {
        "records": {"file": str(records_file), "total": total, "with_images": modality["with images"],
                    "text_only": modality["text-only"], "available": total - dropped, "dropped": dropped,
                    "available_file": str(out_path) if dropped else None},
        "check": {"good": total - problems.total, "bad": problems.total,
                  "problems": {k: {"count": v, "examples": problems.examples[k]}
                               for k, v in sorted(problems.counts.items())}},
        "sources": {name: count.to_json() for name, count in sources.items()},
        "train_with": {"data.path": str(out_path if dropped else records_file),
                       "data.image_folder": str(image_root)},
    }
