"""Resumable HTTP(S) downloads: a `.part` file that survives a crash, `Range` resume, retries, sha256.

`fetch(url, dest)` writes `dest.part` and, beside it, `dest.part.json` holding what identifies the
remote file (a stable `key`, its ETag / Last-Modified and size). A later call, in this process or
after a crash, asks only for the missing bytes (`Range: bytes=N-` with `If-Range`, so a file that
changed on the server is fetched again from the start instead of being spliced). A dropped
connection is retried from where it stopped; the bytes already on disk are never fetched twice. The
sha256 is computed while writing (the `.part` prefix is hashed once on resume) and compared with
`expected_sha256` when the source publishes one. Only then is the file renamed to `dest`.
Progress is a tqdm bar in bytes (size, rate and ETA).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

CHUNK = 1 << 20
RETRY_STATUS = (408, 425, 429, 500, 502, 503, 504)
USER_AGENT = "llava15-data-prepare"


class DownloadError(RuntimeError):
    """A download that cannot complete; the message names the URL and why."""


@dataclass
class RemoteInfo:
    size: int | None
    etag: str | None
    last_modified: str | None


@dataclass
class Fetched:
    path: Path
    size: int
    sha256: str
    fetched_bytes: int
    """Bytes transferred by this call (0 when the file was already complete)."""


def _request(url: str, headers: dict[str, str] | None, method: str = "GET") -> urllib.request.Request:
    return urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})}, method=method)


def head(url: str, headers: dict[str, str] | None = None, timeout: float = 60) -> RemoteInfo:
    """Size and validators of a remote file (HEAD, or a 1-byte ranged GET where HEAD is refused)."""
    try:
        with urllib.request.urlopen(_request(url, headers, "HEAD"), timeout=timeout) as resp:
            size = resp.headers.get("Content-Length")
            return RemoteInfo(int(size) if size else None, resp.headers.get("ETag"),
                              resp.headers.get("Last-Modified"))
    except urllib.error.HTTPError as exc:
        if exc.code not in (403, 405, 501):
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"{url}: {exc}") from exc
    try:
        ranged = _request(url, {**(headers or {}), "Range": "bytes=0-0"})
        with urllib.request.urlopen(ranged, timeout=timeout) as resp:
            match = re.search(r"/(\d+)$", resp.headers.get("Content-Range", ""))
            length = resp.headers.get("Content-Length")
            size = int(match.group(1)) if match else int(length) if resp.status == 200 and length else None
            return RemoteInfo(size, resp.headers.get("ETag"), resp.headers.get("Last-Modified"))
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"{url}: {exc}") from exc


def part_paths(dest: Path) -> tuple[Path, Path]:
    part = dest.with_name(dest.name + ".part")
    return part, dest.with_name(dest.name + ".part.json")


def partial_bytes(dest: str | Path) -> int:
    """Bytes of `dest` already on disk from an interrupted download (0 if none)."""
    part, meta = part_paths(Path(dest))
    return part.stat().st_size if part.is_file() and meta.is_file() else 0


def _hash_file(path: Path) -> hashlib._Hash:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK * 8):
            sha.update(block)
    return sha


def _validator(state: dict) -> str | None:
    etag = state.get("etag")
    if etag and not etag.startswith("W/"):  # If-Range needs a strong validator
        return etag
    return state.get("last_modified")


def fetch(url: str, dest: str | Path, *, key: str | None = None, headers: dict[str, str] | None = None,
          expected_size: int | None = None, expected_sha256: str | None = None, retries: int = 5,
          backoff: float = 1.0, timeout: float = 60, desc: str | None = None, position: int | None = None,
          quiet: bool = False) -> Fetched:
    """Download `url` to `dest`, resuming an earlier partial download of the same `key` (default: url)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part, meta = part_paths(dest)
    key = key or url
    state = json.loads(meta.read_text()) if meta.is_file() and part.is_file() else {}
    if state.get("key") != key:  # nothing to resume, or a different file: start clean
        part.unlink(missing_ok=True)
        state = {"key": key}
    have = part.stat().st_size if part.is_file() else 0
    sha = _hash_file(part) if have else hashlib.sha256()
    total = state.get("size") or expected_size
    fetched, failures = 0, 0
    bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
               desc=desc or dest.name, position=position, leave=True, disable=quiet, dynamic_ncols=True)
    try:
        while total is None or have < total:
            h = dict(headers or {})
            if have:
                h["Range"] = f"bytes={have}-"
                if _validator(state):
                    h["If-Range"] = _validator(state)
            try:
                with urllib.request.urlopen(_request(url, h), timeout=timeout) as resp:
                    start = have
                    if resp.status == 206:
                        match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
                        if not match or int(match.group(1)) != have:
                            raise DownloadError(f"{url}: server answered a range starting at "
                                                f"{match.group(1) if match else '?'} instead of {have}")
                        if match.group(2) != "*":
                            total = int(match.group(2))
                    else:  # 200: the whole file (first request, or the server ignored/refused the range)
                        start = 0
                        length = resp.headers.get("Content-Length")
                        total = int(length) if length else None
                        state.update(etag=resp.headers.get("ETag"), size=total,
                                     last_modified=resp.headers.get("Last-Modified"))
                        meta.write_text(json.dumps(state))
                        bar.total = total
                        bar.refresh()
                        if have:
                            bar.write(f"{dest.name}: the server sent the whole file again (no range "
                                      f"support, or the file changed); restarting from 0")
                            have, sha = 0, hashlib.sha256()
                            bar.reset(total=total)
                    if expected_size is not None and total is not None and total != expected_size:
                        raise DownloadError(f"{url}: size {total} differs from the expected {expected_size}")
                    with open(part, "r+b" if start else "wb") as f:
                        f.seek(start)
                        f.truncate()
                        while chunk := resp.read1(CHUNK):
                            f.write(chunk)
                            f.flush()
                            sha.update(chunk)
                            have += len(chunk)
                            fetched += len(chunk)
                            bar.update(len(chunk))
                            failures = 0
                    if total is None:
                        break  # no length given: the end of the body is the end of the file
                    if have < total:
                        raise ConnectionError(f"connection closed at {have} of {total} bytes")
            except urllib.error.HTTPError as exc:
                if exc.code == 416 and total is not None and have >= total:
                    break
                if exc.code in RETRY_STATUS and failures < retries:
                    failures += 1
                    time.sleep(backoff * 2 ** (failures - 1))
                    continue
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                failures += 1
                if failures > retries:
                    raise DownloadError(f"{url}: {exc} (after {retries} retries; rerun to resume from "
                                        f"byte {have})") from exc
                bar.write(f"{dest.name}: {exc}; resuming from byte {have}")
                time.sleep(backoff * 2 ** (failures - 1))
    finally:
        bar.close()
    if total is not None and have != total:
        raise DownloadError(f"{url}: got {have} bytes, expected {total}")
    digest = sha.hexdigest()
    if expected_sha256 and digest != expected_sha256.lower():
        part.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        raise DownloadError(f"{url}: sha256 {digest} differs from the published {expected_sha256}; the "
                            f"partial file was deleted, rerun to fetch it again")
    os.replace(part, dest)
    meta.unlink(missing_ok=True)
    return Fetched(dest, have, digest, fetched)
