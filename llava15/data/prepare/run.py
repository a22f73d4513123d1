"""`llava15 data prepare stage1|stage2 --root DIR`: the plan, the downloads, the check, the report.

1. The plan (`plan.py`): the state of the record file and of each selected source, with sizes.
   `--dry-run` prints it with the free disk space and stops; otherwise the disk space needed is
   checked against the free space before anything is fetched.
2. The record file first (OCR-VQA needs it to know which images to fetch), then the archives and
   OCR-VQA in parallel: download (resumable), extract (idempotent), write the marker, delete the
   archive unless `--keep-archives`.
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
from pathlib import Path

from llava15.data.prepare import hub
from llava15.data.prepare.download import DownloadError, Fetched, fetch
from llava15.data.prepare.extract import ExtractError, extract
from llava15.data.prepare.ocr_vqa import fetch_ocr_vqa
from llava15.data.prepare.plan import (
    REPORT,
    describe,
    done_marker,
    existing_parent,
    gib,
    ocr_vqa_wanted,
    plan,
    plan_ocr_vqa,
    print_plan,
    write_marker,
)
from llava15.data.prepare.report import check_against_disk
from llava15.data.prepare.sources import HubFile, Item, OcrVqaImages, Stage, select


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
    info = {"from": describe(item), "size": got.size, "fetched_bytes": got.fetched_bytes,
            "sha256": got.sha256 or None, "sha256_checked": checked}
    if item.extract_to:
        done = extract(got.path, root / item.extract_to, desc=f"extract {item.name}", position=position)
        info.update(extracted_files=done.files, extracted_bytes=done.bytes, already_extracted=done.skipped)
    write_marker(root, stage, item, info)
    if item.extract_to and not keep_archives:
        got.path.unlink()
    return {"state": "fetched", **info}


def _run_ocr_vqa(stage: Stage, item: OcrVqaImages, root: Path, jobs: int, rate: float) -> dict:
    dataset_json = root / item.dataset_json
    if not dataset_json.is_file():
        if not item.dataset_json_url:
            return {"state": "needs-input", "note": plan_ocr_vqa(stage, root, item).note}
        if Path(item.dataset_json_url).is_file():
            dataset_json.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item.dataset_json_url, dataset_json)
        else:
            fetch(item.dataset_json_url, dataset_json, desc="ocr_vqa dataset.json")
    wanted = ocr_vqa_wanted(stage, root, item)
    if wanted is None:
        return {"state": "skipped", "note": "the record file is missing, so the images it needs are unknown"}
    try:
        dataset = json.loads(dataset_json.read_text())
        if not isinstance(dataset, dict):
            raise ValueError(f"a JSON {type(dataset).__name__}, expected an object keyed by image id")
    except ValueError as exc:
        raise DownloadError(f"{dataset_json} is not OCR-VQA's dataset.json ({exc}); replace it with the real "
                            f"file (see docs/data.md)") from exc
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
    free = shutil.disk_usage(existing_parent(root)).free
    if needed > free and not getattr(args, "no_space_check", False):
        raise SystemExit(f"data prepare: needs about {gib(needed)} of disk, {gib(free)} free under "
                         f"{existing_parent(root)}; free some space, choose sources with --only, or pass "
                         f"--no-space-check")
    root.mkdir(parents=True, exist_ok=True)
    downloads: dict[str, dict] = {}
    by_name = {p.item.name: p for p in planned}
    jobs = max(1, getattr(args, "jobs", 4) or 4)

    def run_one(item: Item, position: int | None) -> dict:
        state = by_name[item.name].state
        if state == "done":
            return {"state": "done", **(done_marker(root, stage, item) or {})}
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
            print(f"  {name:<14} expected {s['expected']:>8}  present {s['present']:>8}  "
                  f"missing {s['missing']:>6}  {gib(s['bytes'])}")
        print(f"records: {r['total']} ({r['dropped']} dropped for missing images)")
        t = report["train_with"]
        print(f"train with: data.path={t['data.path']} data.image_folder={t['data.image_folder']}")
    print(f"report: {root / REPORT}")
