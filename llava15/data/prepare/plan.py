"""The plan of `prepare`: what state each item is in, what is left to fetch, how much disk it needs.

An item is `done` when a marker under `DIR/.prepare/` says an earlier run finished it (nothing is
asked of any server), `downloaded` when its archive is here and only extraction is left, `found` when
its destination is already there without a marker of ours (put by hand or another tool: kept, and the
check counts what is missing), `cached` when the local Hub cache holds it, `partial` after an
interrupted download, else `todo` with the size the server reports (`needs-input` / `unreachable`
when it cannot be fetched). The disk needed is what is left to fetch plus, for an archive, as much
again to extract it (images do not compress).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from llava15.data.prepare import hub
from llava15.data.prepare.download import DownloadError, head, partial_bytes
from llava15.data.prepare.sources import HubFile, Item, OcrVqaImages, Stage, UrlFile

STATE_DIR = ".prepare"
REPORT = "prepare_report.json"


@dataclass
class Planned:
    item: Item
    state: str
    """`done` (by an earlier run), `downloaded` (the archive is here, extraction is left), `found` (on
    disk, put there otherwise), `cached` (in the local Hub cache), `partial`, `todo`, `needs-input` or
    `unreachable`."""
    size: int | None = None
    have: int = 0
    note: str = ""

    @property
    def to_fetch(self) -> int | None:
        if self.state not in ("todo", "partial"):
            return 0
        return None if self.size is None else self.size - self.have

    @property
    def disk_needed(self) -> int | None:
        """Bytes this item still needs on disk: what is left to fetch, plus the extracted size of an
        archive (estimated as its own size: images do not compress)."""
        if self.state in ("done", "found", "needs-input", "unreachable"):
            return 0
        fetch_left = self.to_fetch
        if fetch_left is None:
            return None
        return fetch_left + ((self.size or 0) if getattr(self.item, "extract_to", None) else 0)


def _marker(root: Path, stage: Stage, item: Item) -> Path:
    return root / STATE_DIR / f"{stage.name}-{item.name}.json"


def done_marker(root: Path, stage: Stage, item: Item) -> dict | None:
    marker = _marker(root, stage, item)
    if isinstance(item, OcrVqaImages) or not marker.is_file():
        return None
    target = root / (item.extract_to or item.dest)
    return json.loads(marker.read_text()) if target.exists() else None


def write_marker(root: Path, stage: Stage, item: Item, info: dict) -> None:
    marker = _marker(root, stage, item)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({**info, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1))


def ocr_vqa_wanted(stage: Stage, root: Path, item: OcrVqaImages) -> set[str] | None:
    """Ids of the OCR-VQA images the record file uses (None when there is no record file)."""
    from llava15.data.formats import record_images, scan_json

    records = root / stage.records.dest
    if not records.is_file():
        return None
    image_root = (root / stage.image_root).resolve()
    prefix = (root / item.images_dir).resolve().relative_to(image_root).as_posix() + "/"
    wanted = set()
    for _, _, _, record in scan_json(records):
        for rel in record_images(record) if isinstance(record, dict) else []:
            if isinstance(rel, str) and rel.startswith(prefix):
                wanted.add(Path(rel).stem)
    return wanted


def _found(root: Path, item: Item) -> bool:
    """The item's destination is already there, put by hand or another tool (no marker of ours, and
    no archive or partial download of ours that an interrupted run left)."""
    if isinstance(item, OcrVqaImages) or partial_bytes(root / item.dest):
        return False
    target = root / (item.extract_to or item.dest)
    return target.is_file() or (target.is_dir() and any(target.iterdir()))


def plan(stage: Stage, items: list[Item], root: Path, endpoint: str | None, redo: set[str] = frozenset()
         ) -> list[Planned]:
    out = []
    for item in [stage.records, *items]:
        if item.source not in redo and done_marker(root, stage, item) is not None:
            out.append(Planned(item, "done"))
            continue
        archive = root / item.dest if getattr(item, "extract_to", None) else None
        if archive is not None and archive.is_file():  # downloaded (renamed into place when complete)
            out.append(Planned(item, "downloaded", archive.stat().st_size, note="extraction resumes"))
            continue
        if item.source not in redo and _found(root, item):
            out.append(Planned(item, "found", note="already on disk, not fetched; the check counts what is "
                                                   f"missing (--redo {item.source} fetches it again)"))
            continue
        try:
            if isinstance(item, HubFile):
                cached = hub.cached_file(item)
                if cached is not None:
                    out.append(Planned(item, "cached", cached.stat().st_size,
                                       note=f"in the local Hub cache: {cached}"))
                    continue
                info = hub.hub_info(item, endpoint)
                size = info.size
                note = "sha256 published" if info.sha256 else ""
            elif isinstance(item, UrlFile):
                size, note = item.size or head(item.url).size, "no checksum published"
            else:
                out.append(plan_ocr_vqa(stage, root, item))
                continue
        except DownloadError as exc:
            out.append(Planned(item, "unreachable", note=str(exc)))
            continue
        have = partial_bytes(root / item.dest)
        out.append(Planned(item, "partial" if have else "todo", size, have, note))
    return out


def plan_ocr_vqa(stage: Stage, root: Path, item: OcrVqaImages) -> Planned:
    dataset_json = root / item.dataset_json
    if not dataset_json.is_file() and not item.dataset_json_url:
        return Planned(item, "needs-input", note="needs dataset.json: pass --ocr-vqa-json URL|PATH or put "
                                                 f"it at {dataset_json} (see docs/data.md)")
    wanted = ocr_vqa_wanted(stage, root, item)
    images = root / item.images_dir
    present = sum(1 for k in wanted if (images / f"{k}.jpg").is_file()) if wanted is not None else 0
    what = (f"{len(wanted) - present} of {len(wanted)} images to fetch" if wanted is not None
            else "images: counted once the record file is here")
    return Planned(item, "todo", note=f"{what}; sizes unknown until fetched")


def gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def describe(item: Item) -> str:
    if isinstance(item, HubFile):
        return f"hf://{item.repo_id}/{item.filename}"
    if isinstance(item, UrlFile):
        return item.url
    return item.dataset_json_url or item.dataset_json


def print_plan(planned: list[Planned], root: Path) -> tuple[int, bool]:
    """Print the plan; returns (disk needed in bytes, whether every size is known)."""
    print(f"{'item':<16}{'state':<13}{'size':>12}{'to fetch':>12}  from")
    for p in planned:
        print(f"{p.item.name:<16}{p.state:<13}{gib(p.size) if p.size is not None else '-':>12}"
              f"{gib(p.to_fetch):>12}  {describe(p.item)}" + (f"\n{'':<16}{p.note}" if p.note else ""))
    needs = [p.disk_needed for p in planned]
    known = all(n is not None for n in needs) and not any(isinstance(p.item, OcrVqaImages)
                                                         and p.state == "todo"
                                                         for p in planned)
    needed = sum(n for n in needs if n is not None)
    free = shutil.disk_usage(existing_parent(root)).free
    print(f"to fetch: {gib(sum(p.to_fetch or 0 for p in planned))}; disk needed (archives counted twice, for "
          f"extraction): {gib(needed)}{'' if known else ' + unknown (OCR-VQA images, unknown sizes)'}; "
          f"free under {existing_parent(root)}: {gib(free)}")
    return needed, known


def existing_parent(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path
