"""`llava15 data prepare stage1|stage2 --root DIR`: the plan, the downloads, the check, the report.

1. Plan: for the record file and each selected source, whether it is already done (a marker under
   `DIR/.prepare/` written after the last step of that item succeeded: nothing is asked of any server
   for it), in the local Hub cache, partly downloaded, or to fetch, with the size the server reports.
   `--dry-run` prints this with the free disk space and stops. Otherwise the disk space needed
   (downloads left plus, for archives, about as much again to extract them; images do not compress)
   is checked against the free space before anything is fetched.
2. The record file first (OCR-VQA needs it to know which images to fetch), then the archives and
   OCR-VQA in parallel: download (resumable), extract (idempotent), delete the archive unless
   `--keep-archives`, write the marker.
3. The check of every record against the images on disk, the filtered `<name>_available.json` when
   images are missing, and `DIR/prepare_report.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from llava15.data.prepare import hub
from llava15.data.prepare.download import DownloadError, Fetched, fetch, head, partial_bytes
from llava15.data.prepare.extract import ExtractError, extract
from llava15.data.prepare.ocr_vqa import fetch_ocr_vqa
from llava15.data.prepare.report import check_against_disk
from llava15.data.prepare.sources import HubFile, Item, OcrVqaImages, Stage, UrlFile, select

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


def _done(root: Path, stage: Stage, item: Item) -> dict | None:
    marker = _marker(root, stage, item)
    if isinstance(item, OcrVqaImages) or not marker.is_file():
        return None
    target = root / (item.extract_to or item.dest)
    return json.loads(marker.read_text()) if target.exists() else None


def _write_marker(root: Path, stage: Stage, item: Item, info: dict) -> None:
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
        if item.source not in redo and _done(root, stage, item) is not None:
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
                    out.append(Planned(item, "cached", cached.stat().st_size, note=f"in the local Hub cache: {cached}"))
                    continue
                info = hub.hub_info(item, endpoint)
                size = info.size
                note = "sha256 published" if info.sha256 else ""
            elif isinstance(item, UrlFile):
                size, note = item.size or head(item.url).size, "no checksum published"
            else:
                out.append(_plan_ocr_vqa(stage, root, item))
                continue
        except DownloadError as exc:
            out.append(Planned(item, "unreachable", note=str(exc)))
            continue
        have = partial_bytes(root / item.dest)
        out.append(Planned(item, "partial" if have else "todo", size, have, note))
    return out


def _plan_ocr_vqa(stage: Stage, root: Path, item: OcrVqaImages) -> Planned:
    dataset_json = root / item.dataset_json
    if not dataset_json.is_file() and not item.dataset_json_url:
        return Planned(item, "needs-input", note=f"needs dataset.json: pass --ocr-vqa-json URL|PATH or put it at "
                                                 f"{dataset_json} (see docs/data.md)")
    wanted = ocr_vqa_wanted(stage, root, item)
    images = root / item.images_dir
    present = sum(1 for k in wanted if (images / f"{k}.jpg").is_file()) if wanted is not None else 0
    what = (f"{len(wanted) - present} of {len(wanted)} images to fetch" if wanted is not None
            else "images: counted once the record file is here")
    return Planned(item, "todo", note=f"{what}; sizes unknown until fetched")


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def _describe(item: Item) -> str:
    if isinstance(item, HubFile):
        return f"hf://{item.repo_id}/{item.filename}"
    if isinstance(item, UrlFile):
        return item.url
    return item.dataset_json_url or item.dataset_json


def print_plan(planned: list[Planned], root: Path) -> tuple[int, bool]:
    """Print the plan; returns (disk needed in bytes, whether every size is known)."""
    print(f"{'item':<16}{'state':<13}{'size':>12}{'to fetch':>12}  from")
    for p in planned:
        print(f"{p.item.name:<16}{p.state:<13}{_gib(p.size) if p.size is not None else '-':>12}"
              f"{_gib(p.to_fetch):>12}  {_describe(p.item)}" + (f"\n{'':<16}{p.note}" if p.note else ""))
    needs = [p.disk_needed for p in planned]
    known = all(n is not None for n in needs) and not any(isinstance(p.item, OcrVqaImages) and p.state == "todo"
                                                         for p in planned)
    needed = sum(n for n in needs if n is not None)
    free = shutil.disk_usage(_existing(root)).free
    print(f"to fetch: {_gib(sum(p.to_fetch or 0 for p in planned))}; disk needed (archives counted twice, for "
          f"extraction): {_gib(needed)}{'' if known else ' + unknown (OCR-VQA images, unknown sizes)'}; "
          f"free under {_existing(root)}: {_gib(free)}")
    return needed, known


def _existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _fetch_item(stage: Stage, item: Item, root: Path, endpoint: str | None, keep_archives: bool,
                position: int | None) -> dict:
    archive = root / item.dest
    if item.extract_to and archive.is_file():  # complete: an earlier run died while extracting it
        got, checked = Fetched(archive, archive.stat().st_size, "", 0), False
    elif isinstance(item, HubFile):
        got, checked = hub.fetch_hub_file(item, root, endpoint, position=position)
    else:
        got = fetch(item.url, root / item.dest, expected_size=item.size, expected_sha256=item.sha256,
                    desc=item.name, position=position)
        checked = item.sha256 is not None
    info = {"from": _describe(item), "size": got.size, "fetched_bytes": got.fetched_bytes, "sha256": got.sha256 or None,
            "sha256_checked": checked}
    if item.extract_to:
        done = extract(got.path, root / item.extract_to, desc=f"extract {item.name}", position=position)
        info.update(extracted_files=done.files, extracted_bytes=done.bytes, already_extracted=done.skipped)
    _write_marker(root, stage, item, info)
    if item.extract_to and not keep_archives:
        got.path.unlink()
    return {"state": "fetched", **info}


def _run_ocr_vqa(stage: Stage, item: OcrVqaImages, root: Path, jobs: int, rate: float) -> dict:
    dataset_json = root / item.dataset_json
    if not dataset_json.is_file():
        if not item.dataset_json_url:
            return {"state": "needs-input", "note": _plan_ocr_vqa(stage, root, item).note}
        if Path(item.dataset_json_url).is_file():
            dataset_json.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item.dataset_json_url, dataset_json)
        else:
            fetch(item.dataset_json_url, dataset_json, desc="ocr_vqa dataset.json")
    wanted = ocr_vqa_wanted(stage, root, item)
    if wanted is None:
        return {"state": "skipped", "note": "the record file is missing, so the images it needs are unknown"}
    dataset = json.loads(dataset_json.read_text())
    result = fetch_ocr_vqa(dataset, root / item.images_dir, wanted, jobs=jobs, rate=rate)
    return {"state": "fetched", **result.to_json()}


def run_prepare(args) -> int:
    root = Path(args.root).expanduser().absolute()
    only = [s.strip() for s in args.only.split(",") if s.strip()] if getattr(args, "only", None) else None
    mirrors = dict(m.split("=", 1) for m in (getattr(args, "mirror", None) or []))
    try:
        stage, items = select(args.stage, only, mirrors, getattr(args, "ocr_vqa_json", None))
    except ValueError as exc:
        raise SystemExit(f"data prepare: {exc}") from None
    endpoint = getattr(args, "hub_endpoint", None)
    redo = {s.strip() for s in (getattr(args, "redo", None) or "").split(",") if s.strip()}
    unknown = redo - {"records", *stage.sources}
    if unknown:
        raise SystemExit(f"data prepare: --redo: unknown source(s) {', '.join(sorted(unknown))}; "
                         f"known: records, {', '.join(stage.sources)}")
    print(f"data prepare {stage.name} into {root}")
    planned = plan(stage, items, root, endpoint, redo)
    needed, _ = print_plan(planned, root)
    if args.dry_run:
        return 0
    free = shutil.disk_usage(_existing(root)).free
    if needed > free and not getattr(args, "no_space_check", False):
        raise SystemExit(f"data prepare: needs about {_gib(needed)} of disk, {_gib(free)} free under "
                         f"{_existing(root)}; free some space, choose sources with --only, or pass --no-space-check")
    root.mkdir(parents=True, exist_ok=True)
    downloads: dict[str, dict] = {}
    by_name = {p.item.name: p for p in planned}
    jobs = max(1, getattr(args, "jobs", 4) or 4)

    def run_one(item: Item, position: int | None) -> dict:
        state = by_name[item.name].state
        if state == "done":
            return {"state": "done", **(_done(root, stage, item) or {})}
        if state == "found":
            return {"state": "found", "note": "already on disk, not fetched"}
        try:
            if isinstance(item, OcrVqaImages):
                return _run_ocr_vqa(stage, item, root, jobs, getattr(args, "ocr_vqa_rate", 10.0))
            return _fetch_item(stage, item, root, endpoint, getattr(args, "keep_archives", False), position)
        except (DownloadError, ExtractError, OSError) as exc:
            print(f"{item.name}: FAILED: {exc}", file=sys.stderr)
            return {"state": "failed", "error": str(exc)}

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        downloads["records"] = run_one(stage.records, None)
        futures = {item.name: pool.submit(run_one, item, i) for i, item in enumerate(items)}
        for name, fut in futures.items():
            downloads[name] = fut.result()
    except KeyboardInterrupt:
        # Every step is crash-safe (.part files, files renamed into place when complete, markers last), so
        # stop now rather than wait for the worker threads to finish their downloads.
        print("\ninterrupted: what was fetched is kept; rerun the same command to resume", file=sys.stderr)
        sys.stderr.flush()
        os._exit(130)
    pool.shutdown()
    report: dict = {"stage": stage.name, "root": str(root), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "only": only, "downloads": downloads}
    if (root / stage.records.dest).is_file():
        report.update(check_against_disk(stage, root))
    else:
        report["records"] = None
    failed = [n for n, d in downloads.items() if d["state"] == "failed"]
    report["ok"] = not failed and report["records"] is not None
    (root / REPORT).write_text(json.dumps(report, indent=1))
    _print_summary(report, root)
    return 0 if report["ok"] else 1


def _print_summary(report: dict, root: Path) -> None:
    for name, d in report["downloads"].items():
        extra = d.get("error") or d.get("note") or ""
        print(f"{name:<16}{d['state']:<12}{extra}")
    if report.get("records"):
        r = report["records"]
        for name, s in report["sources"].items():
            print(f"  {name:<14} expected {s['expected']:>8}  present {s['present']:>8}  missing {s['missing']:>6}"
                  f"  {_gib(s['bytes'])}")
        print(f"records: {r['total']} ({r['dropped']} dropped for missing images)")
        t = report["train_with"]
        print(f"train with: data.path={t['data.path']} data.image_folder={t['data.image_folder']}")
    print(f"report: {root / REPORT}")
