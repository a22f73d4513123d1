"""Readers: LLaVA JSON / JSONL records and Hugging Face `datasets` rows -> `Conversation`.

`read_records(path)` yields `(index, record_dict)` from a JSON list, a JSONL file, a `datasets` folder
(`save_to_disk`), parquet file(s), or a Hub path (`hf://<repo>[/file]`, resolved to local files by
`hub_paths.resolve_data_path`). Two record schemas are read: LLaVA's (`conversations` of `from`/`value`,
`<image>` in the text, `image` paths or embedded images) and the Hub's VLM schema (`messages` of
`role`/`content`, content a string or a list of `{"type": "image"}` / `{"type": "text", "text": ...}`
parts, `images` consumed in order by the image parts). An image part becomes `<image>`, separated from
the parts around it by a newline; text parts are kept as written: `[image, text "Q"]` is
`"<image>\\nQ"` and `[text "Q", image]` is `"Q\\n<image>"`, as LLaVA's records write them, so both
schemas give the same conversation, word counts, ids and labels. `scan_json(path)` streams a JSON list
or JSONL file and also gives each record's byte span, so a dataset can index a 665K-record file
without holding it in memory and re-read one record later with `read_span`. `record_to_conversation`
validates one record (roles, texts, `<image>` count against images) and raises `DataError` naming
file, record and field.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llava15.data.conversation import IMAGE_TOKEN, Conversation, DataError, Message

ROLE_MAP = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
            "system": "system"}
_CHUNK = 8 << 20
_WS = re.compile(r"[ \t\n\r]*")
_SEP = re.compile(r"[ \t\n\r]*,?[ \t\n\r]*")
_MAX_RECORD_CHARS = 256 << 20


def file_kind(path: Any) -> str:
    """`json`, `jsonl` or `hf` (a datasets folder or object, parquet file(s), a Hub dataset)."""
    from llava15.data.hub_paths import is_hub_path

    if not isinstance(path, (str, Path)):
        return "hf"  # a list of parquet files or a `datasets` object
    if is_hub_path(path):
        text = str(path)
        return "jsonl" if text.endswith((".jsonl", ".ndjson")) else "json" if text.endswith(".json") else "hf"
    p = Path(path)
    if p.is_dir() or p.suffix == ".parquet":
        return "hf"
    if p.suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    with open(p, "rb") as f:
        head = f.read(4096).lstrip(codecs.BOM_UTF8).lstrip()
    return "json" if head.startswith(b"[") else "jsonl"


def scan_json(path: str | Path) -> Iterator[tuple[int, int, int, dict]]:
    """Yield `(index, byte_offset, byte_length, record)` for a JSON list or JSONL file, streaming."""
    if file_kind(path) == "jsonl":
        yield from _scan_jsonl(Path(path))
    else:
        yield from _scan_json_array(Path(path))


def read_span(path: str | Path, offset: int, length: int) -> dict:
    """Re-read the record at a byte span found by `scan_json`."""
    with open(path, "rb") as f:
        f.seek(offset)
        return json.loads(f.read(length))


def _scan_jsonl(path: Path) -> Iterator[tuple[int, int, int, dict]]:
    index, offset = 0, 0
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, 1):
            bom = 3 if line_no == 1 and line.startswith(codecs.BOM_UTF8) else 0
            start, body = offset + bom, line[bom:]
            offset += len(line)
            if not body.strip():
                continue
            try:
                record = json.loads(body)
            except json.JSONDecodeError as exc:
                raise DataError(f"line {line_no} is not valid JSON: {exc}", source=str(path),
                                reason="bad_json") from exc
            yield index, start, len(body), record
            index += 1


def _scan_json_array(path: Path) -> Iterator[tuple[int, int, int, dict]]:
    """Stream the elements of a top-level JSON list with `raw_decode`, tracking byte offsets."""
    decode = json.JSONDecoder().raw_decode
    utf8 = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as f:
        raw = f.read(_CHUNK)
        skip = 3 if raw.startswith(codecs.BOM_UTF8) else 0
        state = {"buf": utf8.decode(raw[skip:], final=not raw), "eof": not raw}

        def more(pos: int) -> bool:
            if state["eof"]:
                return False
            data = f.read(_CHUNK)
            state["eof"] = not data
            state["buf"] = state["buf"][pos:] + utf8.decode(data, final=not data)
            return True

        buf = state["buf"]
        pos = _WS.match(buf, 0).end()
        if pos >= len(buf) or buf[pos] != "[":
            raise DataError("expected a JSON list of records ('[' at the start)", source=str(path),
                            reason="bad_json")
        byte_pos, pos, index = skip + pos + 1, pos + 1, 0
        ascii_buf = buf.isascii()
        while True:
            sep = (_SEP if index else _WS).match(buf, pos).end()
            if sep >= len(buf) - 1 and more(pos):  # need more text to see what follows
                buf, pos, ascii_buf = state["buf"], 0, state["buf"].isascii()
                continue
            byte_pos, pos = byte_pos + sep - pos, sep
            if pos >= len(buf):
                raise DataError("unterminated JSON list", source=str(path), reason="bad_json")
            if buf[pos] == "]":
                return
            try:
                record, end = decode(buf, pos)
            except json.JSONDecodeError as exc:
                if len(buf) - pos > _MAX_RECORD_CHARS or not more(pos):
                    raise DataError(f"record {index} is not valid JSON: {exc}", source=str(path),
                                    reason="bad_json") from exc
                buf, pos, ascii_buf = state["buf"], 0, state["buf"].isascii()
                continue
            length = end - pos if ascii_buf else len(buf[pos:end].encode("utf-8"))
            yield index, byte_pos, length, record
            pos, byte_pos, index = end, byte_pos + length, index + 1


def resolve_data_path(path: Any) -> Any:
    """`path` with a Hub path replaced by its local file(s) (see `hub_paths`)."""
    from llava15.data.hub_paths import resolve_data_path as resolve

    return resolve(path)


def open_hf(path: Any) -> Any:
    """A `datasets.Dataset` from a `save_to_disk` folder, parquet file(s) (a file, a folder, or a list),
    a Hub path, or a `datasets` object; image columns stay undecoded bytes until a sample is loaded."""
    try:
        import datasets
    except ImportError as exc:
        raise DataError("reading Hugging Face datasets needs the `datasets` package "
                        "(pip install 'llava15[data]')", source=str(path)) from exc
    path = resolve_data_path(path)
    if isinstance(path, (list, tuple)):
        ds = datasets.Dataset.from_parquet([str(x) for x in path])
    elif not isinstance(path, (str, Path)):
        ds = path
    else:
        p = Path(path)
        if p.is_dir() and not any(p.rglob("*.parquet")):
            ds = datasets.load_from_disk(str(p))
        else:
            files = [str(p)] if p.is_file() else sorted(str(x) for x in p.rglob("*.parquet"))
            ds = datasets.Dataset.from_parquet(files)
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
    for name, feature in ds.features.items():  # keep images as bytes until a sample is loaded
        undecoded = _undecoded(feature, datasets)
        if undecoded is not None:
            ds = ds.cast_column(name, undecoded)
    return ds


def _undecoded(feature: Any, datasets: Any) -> Any:
    """`feature` with every decoding `Image` (also inside lists) set to `decode=False`; None if none."""
    if isinstance(feature, datasets.Image):
        return datasets.Image(decode=False) if feature.decode else None
    if isinstance(feature, (datasets.List, datasets.LargeList)):
        inner = _undecoded(feature.feature, datasets)
        if inner is None:
            return None
        return datasets.List(inner, length=feature.length) if isinstance(feature, datasets.List) \
            else datasets.LargeList(inner)
    return None


def read_records(path: Any) -> Iterator[tuple[int, dict]]:
    """Yield `(index, record)` from a JSON list, a JSONL file, a datasets folder, parquet or a Hub path."""
    path = resolve_data_path(path)
    if file_kind(path) == "hf":
        yield from enumerate(open_hf(path))
    else:
        for index, _, _, record in scan_json(path):
            yield index, record


def record_images(record: dict) -> list[Any]:
    """The record's images as a list (`image` or `images`: a path, an embedded image, a list, or absent)."""
    image = record.get("image")
    if image is None:
        image = record.get("images")
    if image is None:
        return []
    return list(image) if isinstance(image, (list, tuple)) else [image]


_ASCII_WS = frozenset(b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f")  # what str.split() splits on, in ASCII
_WORD_TABLE = bytes(32 if i in _ASCII_WS else 120 for i in range(256))


def word_count(texts: list[str]) -> int:
    """`sum(len(t.split()) for t in texts)`, without building the word lists when the text is ASCII.

    Whitespace bytes become " " and all others "x"; each word then starts at one " x" (or at the
    start), and `bytes.count` runs in C. This is what keeps indexing 665K records within seconds.
    """
    text = " ".join(texts)
    if not text.isascii():
        return len(text.split())
    mapped = text.encode("ascii").translate(_WORD_TABLE)
    return mapped.count(b" x") + (mapped[:1] == b"x")


def modality_length(record: dict) -> int:
    """The original's `modality_lengths`: whitespace words over all turns, negative when text-only."""
    turns = record.get("conversations") or record.get("messages") or []
    words = word_count([_turn_text(t.get("value", t.get("content", ""))) for t in turns if isinstance(t, dict)])
    return words if record_images(record) else -words


def _turn_text(content: Any) -> str:
    """A turn's text; a list of content parts is joined as in the module docstring (lenient: for counting)."""
    if not isinstance(content, list):
        return str(content)
    try:
        return join_parts(content)
    except ValueError:
        return ""


def join_parts(parts: list) -> str:
    """The text of a `messages` content list: an image part is `<image>`, separated from its neighbours
    by a newline; text parts are kept as written. Raises `ValueError(field, message)` on a bad part."""
    out: list[str] = []
    prev_image = False
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image":
            out.append(("\n" if j else "") + IMAGE_TOKEN)
            prev_image = True
        elif kind == "text":
            value = part.get("text")
            if not isinstance(value, str):
                raise ValueError(f"[{j}].text", f"text part holds {type(value).__name__}, expected a string")
            out.append(("\n" if prev_image else "") + value)
            prev_image = False
        else:
            raise ValueError(f"[{j}].type", f"content part of type {kind!r} (known: 'image', 'text')")
    return "".join(out)


_FAST_ROLES = frozenset(("human", "gpt", "system"))


def quick_scan(record: Any) -> tuple[int, bool]:
    """`(modality_length, plain)` in one tight pass; `plain` False means "run the full checks".

    Indexing 665K records must take seconds, so the common well-formed LLaVA record (known roles, an
    answer, no empty text, every `<image>` in the first turn, one per image) is recognised here with
    C-level operations only; anything else goes through `record_to_conversation`.
    """
    try:
        turns = record["conversations"]
        values = [t["value"] for t in turns]
        roles = {t["from"] for t in turns}
        text = " ".join(values)
        image = record.get("image")
        images = 0 if image is None else 1 if type(image) is str else len(image)
        markers = text.count("<image>")
        plain = (roles <= _FAST_ROLES and "gpt" in roles and all(map(str.strip, values))
                 and markers == images and (markers == 0 or values[0].count("<image>") == markers)
                 and (images == 0 or type(image) is str and image.strip() != ""))
        words = word_count([text])
        return (words if images else -words), plain
    except (KeyError, TypeError, AttributeError, IndexError):
        return 0, False


def record_to_conversation(record: dict, index: int, source: str | None = None) -> Conversation:
    """Validate one LLaVA-format record and convert it; raises `DataError` with the reason."""
    if not isinstance(record, dict):
        raise DataError(f"record {index} is a {type(record).__name__}, expected an object",
                        source=source, reason="bad_field")
    rid = str(record.get("id", index))

    def fail(msg: str, field: str, reason: str) -> DataError:
        return DataError(msg, record_id=rid, field=field, reason=reason, source=source)

    key = "conversations" if "conversations" in record else "messages"
    turns = record.get(key)
    if not isinstance(turns, list) or not turns:
        raise fail("missing or empty list of turns", key, "no_assistant")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise fail(f"turn is a {type(turn).__name__}, expected an object", f"{key}[{i}]", "bad_field")
        who = turn.get("from", turn.get("role"))
        role = ROLE_MAP.get(str(who).lower()) if who is not None else None
        if role is None:
            raise fail(f"unknown role {who!r} (known: {', '.join(ROLE_MAP)})",
                       f"{key}[{i}].{'from' if 'from' in turn else 'role'}", "unknown_role")
        field = f"{key}[{i}].{'value' if 'value' in turn else 'content'}"
        text = turn.get("value", turn.get("content"))
        if isinstance(text, list):
            try:
                text = join_parts(text)
            except ValueError as exc:
                raise fail(exc.args[1], field + exc.args[0], "bad_field") from None
        if not isinstance(text, str):
            raise fail(f"text is {type(text).__name__}, expected a string", field, "empty_text")
        if not text.replace(IMAGE_TOKEN, "").strip() and not (role == "user" and IMAGE_TOKEN in text):
            raise fail(f"empty {role} text", field, "empty_text")
        messages.append(Message(role, text))
    if not any(m.role == "assistant" for m in messages):
        raise fail("no assistant turn, nothing to learn", key, "no_assistant")
    images = record_images(record)
    image_key = "image" if record.get("image") is not None or "images" not in record else "images"
    for j, img in enumerate(images):
        if isinstance(img, str) and not img.strip():
            raise fail("empty image path", f"image[{j}]", "missing_image")
        if isinstance(img, dict) and not img.get("bytes") and not img.get("path"):
            raise fail("embedded image without bytes or path", f"{image_key}[{j}]", "missing_image")
    markers = sum(m.content.count(IMAGE_TOKEN) for m in messages)
    if markers != len(images):
        raise fail(f"{markers} <image> marker(s) in the text but {len(images)} image(s)", image_key,
                   "image_count")
    return Conversation(rid, messages, images)
