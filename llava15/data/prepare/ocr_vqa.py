"""OCR-VQA images, fetched one by one from the URLs of its `dataset.json` (`{id: {"imageURL": ...}}`).

Only the images the record file uses are fetched (all of them when there is no record file). Each is
stored as `<id>.jpg`, the name the record file expects, whatever its real format; the real format
(read from the file's magic bytes, then decoded by PIL) is recorded in `images_manifest.json` beside
the images. Requests go through a thread pool with a per-host rate limit; timeouts, connection
errors, 429 and 5xx are retried with backoff. An image that cannot be had (HTTP 404/410/403, not an
image, a 1×1 placeholder, retries exhausted) is listed with the reason. Permanent failures are not
asked again on a rerun; transient ones are.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from tqdm import tqdm

from llava15.data.prepare.download import RETRY_STATUS, USER_AGENT

PERMANENT_STATUS = (401, 403, 404, 410, 451)
MANIFEST = "images_manifest.json"
_MAGIC = ((b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
          (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))


def detect_format(data: bytes) -> str | None:
    """The image format from the first bytes (`jpeg`, `png`, `gif`, `webp`, `bmp`, `tiff`), else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    return None


class HostRateLimiter:
    """At most `rate` requests per second to any one host, shared by all threads."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, host: str) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(host, 0.0))
            self._next[host] = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


@dataclass
class OcrVqaResult:
    requested: int = 0
    present_before: int = 0
    fetched: int = 0
    fetched_bytes: int = 0
    formats: Counter = field(default_factory=Counter)
    unavailable: dict[str, dict] = field(default_factory=dict)
    note: str = ""

    def to_json(self, examples: int = 20) -> dict:
        reasons = Counter(v["reason"].split(":")[0] for v in self.unavailable.values())
        return {"requested": self.requested, "present_before": self.present_before, "fetched": self.fetched,
                "fetched_bytes": self.fetched_bytes, "formats": dict(sorted(self.formats.items())),
                "unavailable": len(self.unavailable), "unavailable_reasons": dict(sorted(reasons.items())),
                "unavailable_examples": {k: v["reason"]
                                         for k, v in sorted(self.unavailable.items())[:examples]},
                **({"note": self.note} if self.note else {})}


def _check_image(data: bytes) -> tuple[str | None, str | None]:
    """(format, None) for a usable image, else (None, reason)."""
    from PIL import Image

    fmt = detect_format(data)
    if fmt is None:
        return None, f"not an image: starts with {data[:16]!r}"
    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            im.load()
    except Exception as exc:
        return None, f"unreadable {fmt}: {type(exc).__name__}: {exc}"
    if size[0] * size[1] <= 1:
        return None, f"placeholder: a {size[0]}x{size[1]} {fmt}"
    return fmt, None


def fetch_image(url: str, out: Path, limiter: HostRateLimiter, retries: int = 3, timeout: float = 30,
                backoff: float = 1.0) -> tuple[str | None, str | None, bool, int]:
    """(format, reason, permanent, bytes): fetch one image and store it at `out` when usable."""
    host = urlparse(url).netloc
    reason = "no attempt"
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        limiter.wait(host)
        try:
            req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                data = resp.read()
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code}"
            if exc.code in RETRY_STATUS:
                continue
            return None, reason, exc.code in PERMANENT_STATUS, 0
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = f"network: {exc}"
            continue
        fmt, problem = _check_image(data)
        if problem:
            return None, problem, True, len(data)
        tmp = out.with_name(out.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, out)
        return fmt, None, False, len(data)
    return None, f"{reason} (after {retries} retries)", False, 0


def _format_on_disk(path: Path) -> str | None:
    with open(path, "rb") as f:
        return detect_format(f.read(16))


def fetch_ocr_vqa(dataset: dict, images_dir: Path, wanted: set[str] | None, jobs: int = 8, rate: float = 10.0,
                  retries: int = 3, backoff: float = 1.0, quiet: bool = False) -> OcrVqaResult:
    """Fetch the images of `dataset` (restricted to `wanted` ids when given) into `images_dir`."""
    images_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = images_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    formats: dict[str, str] = manifest.get("formats", {})
    unavailable: dict[str, dict] = manifest.get("unavailable", {})
    ids = sorted(wanted if wanted is not None else dataset)
    result = OcrVqaResult(requested=len(ids))
    todo = []
    for key in ids:
        out = images_dir / f"{key}.jpg"
        if out.is_file() and out.stat().st_size > 0:
            formats.setdefault(key, _format_on_disk(out) or "unknown")
            unavailable.pop(key, None)
            result.present_before += 1
        elif key not in dataset or not isinstance(dataset[key], dict) or not dataset[key].get("imageURL"):
            unavailable[key] = {"reason": "not in dataset.json (no imageURL)", "permanent": True}
        elif unavailable.get(key, {}).get("permanent"):
            continue
        else:
            todo.append((key, dataset[key]["imageURL"], out))
    limiter = HostRateLimiter(rate)
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, \
            tqdm(total=len(todo), unit="img", desc="ocr_vqa images", disable=quiet,
                 dynamic_ncols=True) as bar:
        futures = {pool.submit(fetch_image, url, out, limiter, retries, backoff=backoff): key
                   for key, url, out in todo}
        for fut in as_completed(futures):
            key = futures[fut]
            fmt, reason, permanent, nbytes = fut.result()
            with lock:
                if fmt:
                    formats[key] = fmt
                    unavailable.pop(key, None)
                    result.fetched += 1
                    result.fetched_bytes += nbytes
                else:
                    formats.pop(key, None)
                    unavailable[key] = {"reason": reason, "permanent": permanent,
                                        "url": dataset[key]["imageURL"]}
            bar.update(1)
    wanted_set = set(ids)
    result.formats = Counter(f for k, f in formats.items() if k in wanted_set)
    result.unavailable = {k: v for k, v in unavailable.items() if k in wanted_set}
    tmp = manifest_path.with_name(MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"formats": formats, "unavailable": unavailable}, indent=1, sort_keys=True))
    os.replace(tmp, manifest_path)
    return result
