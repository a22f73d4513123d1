"""Hub files for `prepare`: found through `huggingface_hub`, fetched resumably, checked by sha256.

`huggingface_hub` resolves the file (endpoint, token, redirects) and gives its size and etag; for
files stored with LFS/Xet the etag is the file's sha256, which the download is checked against. The
bytes go through `download.fetch`, whose `.part` file survives a crash (the hub library's own
download restarts from zero after one). A file already in the local Hub cache (an earlier
`huggingface-cli download`) is linked from there and nothing is fetched.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from llava15.data.prepare.download import DownloadError, Fetched, fetch
from llava15.data.prepare.sources import HubFile

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class HubInfo:
    url: str
    size: int | None
    etag: str
    sha256: str | None
    commit: str | None


def endpoint_or_default(endpoint: str | None) -> str | None:
    """`endpoint`, else `$HF_ENDPOINT` read now (the hub library reads it once, at import)."""
    return endpoint or os.environ.get("HF_ENDPOINT") or None


def cache_dir() -> str | None:
    return os.environ.get("HF_HUB_CACHE") or None


def hub_info(item: HubFile, endpoint: str | None = None) -> HubInfo:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    endpoint = endpoint_or_default(endpoint)
    url = hf_hub_url(item.repo_id, item.filename, repo_type="dataset", revision=item.revision,
                     endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, endpoint=endpoint)
    except Exception as exc:  # the hub library's errors name the repo and the cause
        raise DownloadError(f"hf://{item.repo_id}/{item.filename}: {type(exc).__name__}: {exc}") from exc
    etag = (meta.etag or "").strip('"')
    return HubInfo(meta.location, meta.size, etag, etag if _SHA256.match(etag) else None, meta.commit_hash)


def cached_file(item: HubFile) -> Path | None:
    """The file from the local Hub cache, if an earlier download put it there."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(item.repo_id, item.filename, cache_dir=cache_dir(), revision=item.revision,
                                   repo_type="dataset")
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def _link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".linking")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src.resolve(), tmp)
    except OSError:  # another file system, or links not allowed: copy
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def fetch_hub_file(item: HubFile, root: Path, endpoint: str | None = None, position: int | None = None,
                   quiet: bool = False, backoff: float = 1.0) -> tuple[Fetched, bool]:
    """Bring `item` to `root/item.dest`; returns the result and whether a published sha256 was checked."""
    from huggingface_hub.utils import build_hf_headers

    dest = root / item.dest
    cached = cached_file(item)
    if cached is not None:
        _link_or_copy(cached, dest)
        return Fetched(dest, dest.stat().st_size, "", 0), False
    info = hub_info(item, endpoint)
    from huggingface_hub import constants

    hub_host = urlparse(endpoint_or_default(endpoint) or constants.ENDPOINT).netloc
    headers = build_hf_headers() if urlparse(info.url).netloc == hub_host else {}  # no token to a CDN
    got = fetch(info.url, dest, key=f"hub:{item.repo_id}/{item.filename}@{info.etag}", headers=headers,
                expected_size=info.size, expected_sha256=info.sha256, desc=f"{item.repo_id}/{item.filename}",
                position=position, quiet=quiet, backoff=backoff)
    return got, info.sha256 is not None
