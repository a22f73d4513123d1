"""Checks of a command's inputs that run before any model loads, fast and without torch.

Contract: each `check_*` returns nothing or raises `InputError`, whose message names the argument and
the path, file or id, and says what to do. Nothing here imports torch or transformers, so a mistyped
path fails in a fraction of a second instead of after minutes of loading.

- `check_model_ref(ref, what)`: a local checkpoint folder (with `config.json`, weight files whose
  safetensors headers agree with their sizes, every shard of the index present), or a hub id; with
  `HF_HUB_OFFLINE=1` the id must already be in the local hub cache.
- `check_tokenizer_ref(ref, what)`: a local folder or a hub id (cached when offline).
- `check_lora_adapter(folder, what)`: a llava15 LoRA adapter folder (what `llava15 merge` takes) whose
  base checkpoint passes `check_model_ref`.
- `check_weight_files(folder)`: the safetensors files of a folder are whole (the header's data size
  equals the file's), so a truncated download is named before loading fails somewhere inside.
- `check_image_file(path, what)`, `check_folder(path, what)`, `check_data_path(path, what)`.
- `check_destination(path, overwrite, what)`: refuses a non-empty destination without `--overwrite`.
- `check_recipe_inputs(cfg)`: a training recipe's template, data file and models (before `llava15 train`
  builds anything).
- `bind_port(host, port) -> socket`: the server's listening socket, bound before the model loads, so a
  taken port is named at once; `check_port_free` binds and releases it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import struct
from pathlib import Path
from typing import Any

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
META_FILE = "llava15.json"  # model.format.META_FILE (format imports torch; this module must not)
TOKENIZER_FILES = ("tokenizer*", "vocab*", "merges.txt", "*.model")


class InputError(ValueError):
    """A command's input is wrong; the message names it and says what to do."""


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _cached_hub_folder(repo_id: str, filename: str) -> Path | None:
    """The snapshot folder of `repo_id` in the local hub cache when it holds `filename`, else None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return Path(found).parent if isinstance(found, str) else None


def _check_hub_id(ref: str, what: str, filename: str) -> Path | None:
    if not hub_offline():
        return None  # downloaded (or found in the cache) when the command loads it
    folder = _cached_hub_folder(ref, filename)
    if folder is None:
        raise InputError(f"{what} {ref}: no such folder, and as a hub id it is not in the local hub cache while "
                         f"HF_HUB_OFFLINE=1; pass an existing folder, or download it where the hub is reachable "
                         f"(`hf download {ref}`)")
    return folder


def _missing(ref: str, what: str, kind: str) -> InputError:
    return InputError(f"{what} {ref}: no such {kind}, and not a hub id of the form owner/name")


def check_model_ref(ref: str, what: str = "--model") -> None:
    """A checkpoint folder with config.json and whole weight files, or a hub id (cached when offline)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"{what} {ref}: no config.json in this folder; it is not a model checkpoint "
                             "(a training run keeps its checkpoint in <output_dir>/final)")
        check_weight_files(path)
    elif path.exists():
        raise InputError(f"{what} {ref}: a file; pass the checkpoint folder that holds config.json")
    elif HUB_ID.fullmatch(ref) and not ref.startswith("."):
        folder = _check_hub_id(ref, what, "config.json")
        if folder is not None:
            check_weight_files(folder)
    else:
        raise _missing(ref, what, "folder")


def check_convert_source(ref: str, what: str = "SRC") -> None:
    """A model checkpoint, or a training run's resumable checkpoint (`<output_dir>/checkpoints/step-N`)."""
    path = Path(ref).expanduser()
    if path.is_dir() and (path / "state.json").is_file() and (path / ".metadata").is_file():
        if not (path / "recipe.yaml").is_file():
            raise InputError(f"{what} {ref}: a training checkpoint without its recipe.yaml; the model cannot be "
                             "rebuilt from it")
        return
    check_model_ref(ref, what)


def check_tokenizer_ref(ref: str, what: str = "--tokenizer") -> None:
    path = Path(ref).expanduser()
    if path.is_dir():
        if not any(f for pattern in TOKENIZER_FILES for f in path.glob(pattern)):
            raise InputError(f"{what} {ref}: no tokenizer files (tokenizer.json, tokenizer.model, "
                             "tokenizer_config.json, vocab/merges) in this folder")
    elif path.exists():
        raise InputError(f"{what} {ref}: a file; pass the folder that holds the tokenizer files")
    elif HUB_ID.fullmatch(ref) and not ref.startswith("."):
        _check_hub_id(ref, what, "tokenizer_config.json")
    else:
        raise _missing(ref, what, "folder")


def check_weight_files(folder: str | Path) -> None:
    """Every shard an index names exists, and each safetensors header agrees with its file's size."""
    folder = Path(folder)
    for index in folder.glob("*.safetensors.index.json"):
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"{index}: not a valid safetensors index ({type(exc).__name__}: {exc})") from None
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            raise InputError(f"{index} names {len(missing)} weight file(s) that are missing: "
                             f"{', '.join(missing[:3])}; the download or copy is incomplete")
    for f in sorted(folder.glob("*.safetensors")):
        problem = _safetensors_problem(f)
        if problem:
            raise InputError(f"{f}: {problem}; the file is truncated or damaged (re-download or re-save it)")


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"only {size} bytes, no safetensors header"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return f"the header claims {n} bytes but the file has {size}"
        try:
            header = json.loads(fh.read(n))
        except (ValueError, UnicodeDecodeError):
            return "the safetensors header is not valid JSON"
    if not isinstance(header, dict):
        return "the safetensors header is not a JSON object"
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and len(v.get("data_offsets", ())) == 2]
    expected = 8 + n + max(ends, default=0)
    if expected != size:
        return f"its header describes {expected} bytes but the file has {size}"
    return None


def check_lora_adapter(folder: str, what: str = "ADAPTER_DIR") -> None:
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise InputError(f"{what} {folder}: no such folder")
    meta_file = path / META_FILE
    try:
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else None
    except ValueError as exc:
        raise InputError(f"{meta_file}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != "llava15-lora":
        found = f"no {META_FILE}" if meta is None else f"its {META_FILE} describes a full checkpoint"
        hint = " (a LoRA run writes it to <output_dir>/adapter)"
        raise InputError(f"{what} {folder}: not a llava15 LoRA adapter folder ({found}); `llava15 merge` takes "
                         f"the adapter folder of a LoRA training run{hint}")
    if meta.get("base"):
        check_model_ref(str(meta["base"]), f"the base checkpoint named in {meta_file}:")


def check_image_file(path: str, what: str = "--image") -> None:
    from PIL import Image

    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{what} {path}: no such file")
    try:
        with Image.open(p) as im:
            im.size  # noqa: B018 - the header is decoded: the file is an image
    except Exception as exc:  # PIL raises several types for non-images
        raise InputError(f"{what} {path}: not an image PIL can read ({type(exc).__name__})") from None


def check_folder(path: str, what: str) -> None:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise InputError(f"{what} {path}: " + ("a file, not a folder" if p.exists() else "no such folder"))


def check_data_path(path: str, what: str = "FILE") -> None:
    """A data file (JSON/JSONL/parquet) or a `datasets` folder."""
    if not Path(path).expanduser().exists():
        raise InputError(f"{what} {path}: no such file or folder")


def check_destination(path: str, overwrite: bool, what: str = "destination") -> None:
    """Refuse to write into a non-empty folder unless `overwrite`; a file in the way is always refused."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise InputError(f"{what} {path}: a file is in the way; choose a folder path")
    if p.is_dir() and any(p.iterdir()) and not overwrite:
        raise InputError(f"{what} {path} exists and is not empty; choose another folder, or pass --overwrite "
                         "to write into it (files of the same name are replaced)")


def bind_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (not yet listening); a taken port or foreign address is an `InputError`."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise InputError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free; a listener is not
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InputError(f"--port {port}: {host}:{port} is already in use (another server?); pick another "
                             "--port or stop the process that holds it") from None
        if exc.errno == errno.EACCES:
            raise InputError(f"--port {port}: permission denied (ports below 1024 need privileges)") from None
        raise InputError(f"--host {host} --port {port}: cannot bind ({exc.strerror})") from None
    return sock


def check_port_free(host: str, port: int) -> None:
    bind_port(host, port).close()


def check_recipe_inputs(cfg: Any) -> None:
    """What a recipe (`RecipeConfig`) names: its template, its data file, its models as folders or hub ids.

    `data.image_folder` is left to the trainer, which counts the images it cannot find.
    """
    from llava15.data.templates import get_template

    if cfg.data.template != "hf_chat_template":
        try:
            get_template(cfg.data.template)
        except ValueError as exc:
            raise InputError(f"data.template: {exc}") from None
    if not cfg.data.path:
        raise InputError("data.path is empty: set it to the training data file (data.path=FILE)")
    check_data_path(cfg.data.path, "data.path")
    if cfg.model.init_checkpoint:
        check_model_ref(cfg.model.init_checkpoint, "model.init_checkpoint")
    else:
        check_model_ref(cfg.model.vision_tower, "model.vision_tower")
        llm = cfg.model.llm
        if llm.endswith(".gguf"):
            check_data_path(llm, "model.llm")
        elif "/" in llm or Path(llm).exists():  # otherwise a packaged alias, which the trainer resolves
            check_model_ref(llm, "model.llm")
    if cfg.model.init_projector:
        check_data_path(cfg.model.init_projector, "model.init_projector")
