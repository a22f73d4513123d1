"""Archive extraction that can be interrupted and rerun: each file is written to a temporary name and
renamed when complete (a crash never leaves a truncated image under its real name), files already
extracted with the right size are skipped, and the zip CRC of every extracted file is checked.

When every member of the archive sits under one top-level folder (`train2017/…`, `images/…`), that
folder is dropped, so the files land directly in `target` whatever the archive's own wrapping.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

CHUNK = 1 << 20


class ExtractError(RuntimeError):
    """An archive that cannot be extracted safely; the message names the archive and the member."""


@dataclass
class Extracted:
    files: int
    bytes: int
    skipped: int
    """Files already in place from an earlier, interrupted run."""


def _members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    return [i for i in zf.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX/")
            and PurePosixPath(i.filename).name != ".DS_Store"]


def _strip(names: list[str]) -> str:
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and all("/" in n for n in names):
        return next(iter(tops)) + "/"
    return ""


def uncompressed_size(archive: str | Path) -> int:
    with zipfile.ZipFile(archive) as zf:
        return sum(i.file_size for i in _members(zf))


def _safe_relative(name: str, archive: Path) -> PurePosixPath:
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ExtractError(f"{archive}: member {name!r} would be written outside the target folder")
    return rel


def extract(archive: str | Path, target: str | Path, desc: str | None = None, position: int | None = None,
            quiet: bool = False) -> Extracted:
    """Extract the zip `archive` into `target` (see the module docstring)."""
    archive, target = Path(archive), Path(target)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise ExtractError(f"{archive}: not a zip archive ({exc}); delete it and rerun to fetch it "
                           f"again") from exc
    with zf:
        members = _members(zf)
        prefix = _strip([m.filename for m in members])
        todo, skipped, total = [], 0, 0
        for info in members:
            out = target / _safe_relative(info.filename[len(prefix):], archive)
            total += info.file_size
            if out.is_file() and out.stat().st_size == info.file_size:
                skipped += 1
            else:
                todo.append((info, out))
        need = sum(i.file_size for i, _ in todo)
        target.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(target).free
        if need > free:
            raise ExtractError(f"{archive}: extracting needs {need / 2**30:.2f} GiB, only "
                               f"{free / 2**30:.2f} GiB free under {target}")
        with tqdm(total=need, unit="B", unit_scale=True, unit_divisor=1024, position=position, disable=quiet,
                  desc=desc or f"extract {archive.name}", dynamic_ncols=True) as bar:
            for info, out in todo:
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_name(out.name + ".extracting")
                try:
                    with zf.open(info) as src, open(tmp, "wb") as dst:
                        while block := src.read(CHUNK):  # zipfile checks the CRC at the end of each member
                            dst.write(block)
                            bar.update(len(block))
                except (zipfile.BadZipFile, OSError, EOFError) as exc:
                    tmp.unlink(missing_ok=True)
                    raise ExtractError(f"{archive}: member {info.filename!r}: {exc}; delete the archive and "
                                       f"rerun to fetch it again") from exc
                os.replace(tmp, out)
    return Extracted(files=len(members), bytes=total, skipped=skipped)
