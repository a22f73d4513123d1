"""Lazy LLaVA training dataset with a bad-record policy.

`DatasetIndex.build(path)` streams the data file once and keeps, per record, only its byte span (or row
number for `datasets`/parquet) and the original's modality length (whitespace words, negative when
text-only): a 665K-record JSON is indexed, never tokenized, up front. Records that fail the cheap
checks (structure, roles, texts, `<image>` count, image path outside the root, missing image file) are
removed from the index under `bad_records="skip"` (each counted by reason and logged) or raise under
`"fail"`. `LlavaDataset[i]` re-reads record i, tokenizes it (`encode_conversation`, image tokens
counted toward `model_max_length`) and preprocesses its images; a record found bad only then (an
unreadable image, over-length) is counted and replaced by the next good record, so a run never crashes
mid-epoch and never trains on garbage.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llava15.data.conversation import Conversation, DataError
from llava15.data.formats import (
    file_kind,
    modality_length,
    open_hf,
    quick_scan,
    read_span,
    record_to_conversation,
    resolve_data_path,
    scan_json,
)
from llava15.data.images import ImageSettings

log = logging.getLogger("llava15.data")


def image_path(root: str | Path, rel: str, record_id: str, source: str | None = None) -> Path:
    """`root/rel`, refusing absolute paths and `..` that leave the root."""
    root_s = os.path.normpath(os.path.abspath(root))
    full = os.path.normpath(os.path.join(root_s, rel))
    if os.path.isabs(rel) or not (full == root_s or full.startswith(root_s + os.sep)):
        raise DataError(f"image path {rel!r} escapes the image root {root_s}", record_id=record_id,
                        field="image", reason="path_escape", source=source)
    return Path(full)


def check_record(record: dict, index: int, source: str | None, image_folder: str | Path | None,
                 check_files: bool = True) -> Conversation:
    """Every check that needs no tokenizer: structure, roles, texts, image count and image paths."""
    conv = record_to_conversation(record, index, source)
    if image_folder is not None:
        for j, img in enumerate(conv.images):
            if not isinstance(img, str):
                continue
            path = image_path(image_folder, img, conv.id, source)
            if check_files and not path.is_file():
                raise DataError(f"image file {str(path)!r} not found", record_id=conv.id,
                                field=f"image[{j}]" if len(conv.images) > 1 else "image",
                                reason="missing_image", source=source)
    return conv


@dataclass
class Problems:
    """Rejected records by reason, with example ids and messages."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)

    def add(self, err: DataError, record_id: str | None = None) -> None:
        self.counts[err.reason] += 1
        rid = str(err.record_id if err.record_id is not None else record_id)
        examples = self.examples.setdefault(err.reason, [])
        if len(examples) < 5:  # a few per kind: memory stays flat on a file with many bad records
            examples.append(rid)
            self.messages[rid] = str(err)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class DatasetIndex:
    """Per-record byte spans (or row numbers) and modality lengths of a data file."""

    def __init__(self, path: str | Path, kind: str, offsets: np.ndarray, spans: np.ndarray,
                 modality_lengths: np.ndarray, problems: Problems, hf: Any = None) -> None:
        self.path, self.kind, self.offsets, self.spans = str(path), kind, offsets, spans
        self.modality_lengths, self.problems, self._hf = modality_lengths, problems, hf

    @classmethod
    def build(cls, path: str | Path, image_folder: str | Path | None = None, bad_records: str = "skip",
              check_files: bool = True, validate: bool = True) -> DatasetIndex:
        name = str(path)
        path = resolve_data_path(path)  # hf://… -> local file(s) in the Hub cache
        kind = file_kind(path)
        hf = open_hf(path) if kind == "hf" else None
        path = path if kind != "hf" else name
        rows = ((i, i, 0, r) for i, r in enumerate(hf)) if hf is not None else scan_json(path)
        offsets, spans, mlens = [], [], []
        problems = Problems()
        check_files = check_files and image_folder is not None
        for index, offset, span, record in rows:
            mlen, plain = quick_scan(record)
            if validate and (not plain or check_files):
                try:
                    check_record(record, index, str(path), image_folder, check_files)
                except DataError as err:
                    if bad_records == "fail":
                        raise
                    problems.add(err, str(record.get("id", index)) if isinstance(record, dict) else index)
                    log.warning("skipping record: %s", err)
                    continue
            if not plain:
                mlen = modality_length(record) if isinstance(record, dict) else 0
            offsets.append(offset)
            spans.append(span)
            mlens.append(mlen)
        return cls(path, kind, np.asarray(offsets, dtype=np.int64), np.asarray(spans, dtype=np.int64),
                   np.asarray(mlens, dtype=np.int32), problems, hf)

    def __len__(self) -> int:
        return len(self.offsets)

    def record(self, i: int) -> dict:
        if self._hf is not None:
            return self._hf[int(self.offsets[i])]
        return read_span(self.path, int(self.offsets[i]), int(self.spans[i]))


class LlavaDataset:
    """`ds[i]` -> `{"id", "input_ids", "labels", "pixel_values" (n×3×S×S or None), "modality_length"}`."""

    def __init__(self, path: str | Path, tokenizer: Any, template: Any, image_token_id: int,
                 image_folder: str | Path | None = None, num_image_tokens: int = 576,
                 model_max_length: int = 2048, image: ImageSettings | None = None,
                 bad_records: str = "skip", check_files: bool = True, index: DatasetIndex | None = None) -> None:
        from llava15.data.templates import get_template

        if bad_records not in ("skip", "fail"):
            raise ValueError(f"bad_records must be 'skip' or 'fail', got {bad_records!r}")
        self.index = index or DatasetIndex.build(path, image_folder, bad_records, check_files)
        self.tokenizer, self.image_token_id = tokenizer, image_token_id
        self.template = get_template(template, tokenizer) if isinstance(template, str) else template
        self.image_folder = image_folder
        self.num_image_tokens, self.model_max_length = num_image_tokens, model_max_length
        self.image = image or ImageSettings()
        self.bad_records = bad_records
        self.late_problems = Problems()
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.index)

    @property
    def modality_lengths(self) -> list[int]:
        """Whitespace word count per record, negative when text-only (the original's sampler input)."""
        return self.index.modality_lengths.tolist()

    @property
    def problems(self) -> Problems:
        merged = Problems(self.index.problems.counts + self.late_problems.counts,
                          {**self.index.problems.examples}, {**self.index.problems.messages})
        for reason, ids in self.late_problems.examples.items():
            merged.examples.setdefault(reason, []).extend(ids)
        merged.messages.update(self.late_problems.messages)
        return merged

    def load(self, i: int) -> dict:
        """Sample i, raising `DataError` when it is bad (no policy applied)."""
        import torch

        from llava15.data.images import load_image, preprocess_with
        from llava15.data.tokenization import encode_conversation

        record = self.index.record(i)
        conv = check_record(record, i, self.index.path, self.image_folder, check_files=False)
        try:
            enc = encode_conversation(conv, self.tokenizer, self.template, self.image_token_id,
                                      self.model_max_length, self.num_image_tokens)
        except DataError as err:
            raise err.with_source(self.index.path) from None
        pixels = []
        for j, img in enumerate(conv.images):
            src = image_path(self.image_folder, img, conv.id) if isinstance(img, str) and \
                self.image_folder is not None else img
            try:
                image = load_image(src)
            except Exception as exc:  # any decoder error: the file is unusable
                raise DataError(f"cannot read image {str(src)[:200]!r}: {type(exc).__name__}: {exc}",
                                record_id=conv.id, field=f"image[{j}]", reason="unreadable_image",
                                source=self.index.path) from exc
            pixels.append(preprocess_with(image, self.image))
        return {"id": conv.id, "input_ids": torch.tensor(enc.input_ids, dtype=torch.long),
                "labels": torch.tensor(enc.labels, dtype=torch.long),
                "pixel_values": torch.stack(pixels) if pixels else None,
                "modality_length": int(self.index.modality_lengths[i])}

    def __getitem__(self, i: int) -> dict:
        """Sample i, or the next good one; `sample["skipped"]` lists records skipped on the way (their
        index, reason and message), so a main process can count what DataLoader workers rejected."""
        skipped: list[dict] = []
        for k in range(len(self)):
            j = (i + k) % len(self)
            if j in self._bad:
                continue
            try:
                sample = self.load(j)
                sample["skipped"] = skipped
                return sample
            except DataError as err:
                if self.bad_records == "fail":
                    raise
                self._bad.add(j)
                self.late_problems.add(err)
                skipped.append({"index": j, "reason": err.reason, "error": str(err)})
                log.warning("skipping record %d (replaced by the next good one): %s", j, err)
        raise DataError(f"no usable record in {self.index.path}", reason="empty_dataset")

    def __iter__(self):
        """Every good record once, in order (bad ones are counted and left out)."""
        for i in range(len(self)):
            try:
                yield self.load(i)
            except DataError as err:
                if self.bad_records == "fail":
                    raise
                if i not in self._bad:
                    self._bad.add(i)
                    self.late_problems.add(err)
                    log.warning("skipping record %d: %s", i, err)
