"""Read a data file record by record, turning every unreadable record into a reported item, never a stop.

Contract: `read_items(path)` yields `Item(index, line, record, error)` for a JSONL file, a JSON list, a
`datasets` folder or parquet, streaming (a 665K-record file is never held in memory). Exactly one of
`record` and `error` is set; `error` is a `DataError` with a reason (`not_utf8`, `bad_json`) whose
message names the file and line. `line` is the 1-based line where the record starts (None for
`datasets` rows).

- JSONL: each bad line (bytes that are not UTF-8, text that is not JSON, a line cut short) is one
  error item and reading goes on with the next line.
- A JSON list: an element holding bytes that are not UTF-8 is one error item and reading goes on; text
  that is not JSON (a truncated file) is one error item and ends the file, since the rest cannot be
  told apart from it; `Item.fatal` is then True.

`data.formats.scan_json` is the strict reader training uses (byte spans for random access); this one is
for reporting (`llava15 data check/show`).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava15.data.conversation import DataError
from llava15.data.formats import file_kind, read_records

_CHUNK = 8 << 20
_MAX_RECORD_CHARS = 256 << 20
_WS = re.compile(r"[ \t\n\r]*")
_SEP = re.compile(r"[ \t\n\r]*,?[ \t\n\r]*")
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by "surrogateescape"


@dataclass
class Item:
    index: int
    line: int | None
    record: Any = None
    error: DataError | None = None
    fatal: bool = False


def read_items(path: str | Path) -> Iterator[Item]:
    kind = file_kind(path)
    if kind == "hf":
        for index, record in read_records(path):
            yield Item(index, None, record)
    elif kind == "jsonl":
        yield from _jsonl_items(Path(path))
    else:
        yield from _json_list_items(Path(path))


def _jsonl_items(path: Path) -> Iterator[Item]:
    index = 0
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[3:]
            if not raw.strip():
                continue
            raw = raw.rstrip(b"\r\n")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                err = DataError(f"line {line_no}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})",
                                source=str(path), reason="not_utf8")
                yield Item(index, line_no, error=err)
            else:
                try:
                    yield Item(index, line_no, json.loads(text))
                except json.JSONDecodeError as exc:
                    err = DataError(f"line {line_no}: not valid JSON ({_where(exc)})", source=str(path),
                                    reason="bad_json")
                    yield Item(index, line_no, error=err)
            index += 1


def _where(exc: json.JSONDecodeError) -> str:
    return f"{exc.msg}{' ' if exc.msg.endswith(' at') else ' at '}column {exc.colno}"


class _Text:
    """A sliding window over a file's text that keeps the line number of its read position."""

    def __init__(self, f: Any) -> None:
        self.f, self.decoder = f, codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self.buf, self.pos, self.line, self.eof = "", 0, 1, False
        self.refill()
        if self.buf.startswith("\ufeff"):
            self.buf = self.buf[1:]

    def refill(self) -> bool:
        if self.eof:
            return False
        data = self.f.read(_CHUNK)
        self.eof = not data
        self.buf = self.buf[self.pos:] + self.decoder.decode(data, final=self.eof)
        self.pos = 0
        return True

    def advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to

    def line_at(self, at: int) -> int:
        return self.line + self.buf.count("\n", self.pos, at)


def _json_list_items(path: Path) -> Iterator[Item]:
    decode = json.JSONDecoder().raw_decode
    with open(path, "rb") as f:
        t = _Text(f)
        t.advance(_WS.match(t.buf, 0).end())
        if not t.buf.startswith("[", t.pos):
            yield Item(0, t.line, error=DataError(f"line {t.line}: expected a JSON list of records ('[')",
                                                  source=str(path), reason="bad_json"), fatal=True)
            return
        t.advance(t.pos + 1)
        index = 0
        while True:
            sep = (_SEP if index else _WS).match(t.buf, t.pos).end()
            if sep >= len(t.buf) - 1 and t.refill():  # need more text to see what follows
                continue
            t.advance(sep)
            if t.pos >= len(t.buf):
                yield Item(index, t.line, error=DataError(
                    f"line {t.line}: the file ends inside the JSON list (no closing ']'): it is truncated",
                    source=str(path), reason="bad_json"), fatal=True)
                return
            if t.buf[t.pos] == "]":
                return
            try:
                record, end = decode(t.buf, t.pos)
            except json.JSONDecodeError as exc:
                if len(t.buf) - t.pos <= _MAX_RECORD_CHARS and t.refill():
                    continue
                if exc.pos >= len(t.buf) - 1 or exc.msg.startswith("Unterminated string"):
                    msg = f"the file ends inside record {index}, which starts on line {t.line}: it is truncated"
                else:
                    msg = (f"line {t.line_at(exc.pos)}: not valid JSON ({exc.msg}); the records from line {t.line} "
                           "on cannot be read")
                yield Item(index, t.line, error=DataError(msg, source=str(path), reason="bad_json"), fatal=True)
                return
            if end >= len(t.buf) and t.refill():  # a bare number may continue in the next chunk
                continue
            bad = _UNDECODABLE.search(t.buf, t.pos, end)
            if bad:
                err = DataError(f"line {t.line_at(bad.start())}: not UTF-8 (byte 0x{ord(bad.group()) - 0xdc00:02x})",
                                source=str(path), reason="not_utf8")
                yield Item(index, t.line, error=err)
            else:
                yield Item(index, t.line, record)
            t.advance(end)
            index += 1
