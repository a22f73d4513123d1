"""`data.path` on the Hugging Face Hub: `hf://<repo_id>[@revision][/file-or-folder]`, or a bare
`<owner>/<name>` that is not a local path (a `datasets`-loadable id).

`resolve_data_path(path)` turns such a path into local files before anything reads it, so every
reader (`data check`, `data show`, training) works on the same local files: the files are fetched
through `huggingface_hub` into its cache (fetched once, reused afterwards; `HF_ENDPOINT`,
`HF_HUB_CACHE`, `HF_HUB_OFFLINE` and the user's token apply). A file path gives that file; a folder or
the bare repository gives its parquet files (those of the `train` split when the names say so), or
else its single JSON/JSONL file. A repository with neither is loaded with `datasets.load_dataset(id,
split="train")`. Parquet is read memory-mapped through `datasets`, one row at a time: nothing is
loaded whole.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from llava15.data.conversation import DataError

HUB_PREFIX = "hf://"
DATA_SUFFIXES = (".parquet", ".json", ".jsonl", ".ndjson")
_BARE_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TRAIN = re.compile(r"(^|[/_.-])train([/_.-]|$)")


def is_hub_path(path: Any) -> bool:
    """`hf://…`, or `<owner>/<name>` that does not exist locally and is not a data file name."""
    if not isinstance(path, (str, Path)):
        return False
    text = str(path)
    if text.startswith(HUB_PREFIX):
        return True
    return bool(_BARE_ID.match(text)) and not Path(text).exists() and not text.endswith(DATA_SUFFIXES)


def parse_hub_path(path: str) -> tuple[str, str | None, str]:
    """`(repo_id, revision, path_in_repo)` of `hf://owner/name[@rev][/path]` or `owner/name`."""
    text = path[len(HUB_PREFIX):] if path.startswith(HUB_PREFIX) else path
    parts = text.strip("/").split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise DataError(f"{path!r}: expected hf://<owner>/<name>[@revision][/file-or-folder]", source=path,
                        reason="bad_path")
    name, _, revision = parts[1].partition("@")
    return f"{parts[0]}/{name}", revision or None, "/".join(parts[2:])


def _choose(files: list[str], under: str, path: str) -> list[str]:
    if under:
        files = [f for f in files if f.startswith(under.rstrip("/") + "/")]
    for suffixes in ((".parquet",), (".json", ".jsonl", ".ndjson")):
        found = sorted(f for f in files if f.endswith(suffixes))
        train = [f for f in found if _TRAIN.search(f)]
        found = train or found
        if found:
            if suffixes != (".parquet",) and len(found) > 1:
                raise DataError(f"{path!r}: several JSON files ({', '.join(found[:5])}); name one: "
                                f"hf://<repo>/<file>", source=path, reason="bad_path")
            return found
    return []


def resolve_data_path(path: Any) -> Any:
    """Local file(s) for `path`: unchanged when local; a path, a list of parquet paths, or a `datasets`
    object for a Hub path (see the module docstring)."""
    if not is_hub_path(path):
        return path
    try:
        from huggingface_hub import HfApi, hf_hub_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub comes with transformers
        raise DataError("hf:// paths need huggingface_hub", source=str(path)) from exc
    text = str(path)
    repo_id, revision, inner = parse_hub_path(text)
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now: the hub library reads it once, at import
    cache = os.environ.get("HF_HUB_CACHE") or None

    def download(filename: str) -> str:
        return hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision, endpoint=endpoint,
                               cache_dir=cache)

    try:
        if inner.endswith(DATA_SUFFIXES):
            return download(inner)
        files = HfApi(endpoint=endpoint).list_repo_files(repo_id, repo_type="dataset", revision=revision)
        chosen = _choose(files, inner, text)
        if chosen:
            local = [download(f) for f in chosen]
            return local[0] if not chosen[0].endswith(".parquet") else local
    except DataError:
        raise
    except Exception as exc:
        local = "" if text.startswith(HUB_PREFIX) else " (it is not a local path either)"
        raise DataError(f"cannot read {text!r} from the Hub{local}: {type(exc).__name__}: {exc}", source=text,
                        reason="bad_path") from exc
    if inner:
        raise DataError(f"{text!r}: no parquet or JSON file under {inner!r} in {repo_id}", source=text,
                        reason="bad_path")
    return _load_with_datasets(repo_id, revision, text)


def _load_with_datasets(repo_id: str, revision: str | None, text: str) -> Any:
    """A repository without parquet/JSON files (CSV, a loading script, …): `datasets` reads it."""
    try:
        import datasets

        return datasets.load_dataset(repo_id, split="train", revision=revision)
    except Exception as exc:
        raise DataError(f"{text!r}: no parquet or JSON file, and datasets.load_dataset failed: "
                        f"{type(exc).__name__}: {exc}", source=text, reason="bad_path") from exc
