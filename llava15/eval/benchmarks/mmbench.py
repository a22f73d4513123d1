"""MMBench (English, dev 20230712): multiple choice with circular evaluation.

Layout: ``mmbench/mmbench_dev_20230712.tsv`` (columns ``index, question, hint, A..D, answer, ..., image``
with the image base64-encoded; the rotated circular copies are rows of their own, ``index`` + k·1e6);
another TSV (e.g. a test split) only through ``--question-file`` (a missing dev TSV is an error, never
silently another file). The TSV is read with pandas as ``model_vqa_mmbench.py`` does, so its default NA
strings (``NA``, ``N/A``, ``null``, ``#N/A``, ``nan``, ``None``, an empty cell, ...) are missing values.
Prompt = ``--single-pred-prompt``: ``{hint}\\n`` (unless the hint ``is_none``; a whitespace-only hint
is kept) + question + ``\\n{letter}. {option}`` for A..D up to the first missing one, then the
language's letter instruction; 1024 new tokens; each row asked once; the image is not converted to RGB
before padding (``pads_before_rgb``). Scoring: the upload file of ``convert_mmbench_for_submission.py`` is
always written; dev answers are public, so the circular score is also computed locally (VLMEvalKit
exact matching over the row's non-NA options; rows it cannot parse count as wrong, no LLM fallback).

lmms-lab/MMBench_EN (dev, the 20230712 set) or lmms-lab/MMBench config ``en``/``cn`` (dev 20231003), and
lmms-lab/MMBench_CN: the same columns with the image embedded; ``None`` or ``"nan"`` cells are missing.
"""

from __future__ import annotations

import base64
import io
import math
import re
import zipfile
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from llava15.eval.benchmarks.base import (
    IMAGE_PREFIX,
    LETTER_ANSWER,
    Benchmark,
    MissingData,
    Question,
    Source,
    answer_id,
    hub_id,
    result,
    with_source,
)
from llava15.eval.bootstrap import units
from llava15.eval.metrics import is_na, is_none, mmbench_circular

_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")  # not allowed in XML 1.0
_DROP = ("hint", "category", "source", "image", "comment", "l2-category")


def write_xlsx(path: Path, rows: list[list[Any]]) -> Path:
    """A one-sheet .xlsx (inline strings, numbers as numbers) without a spreadsheet dependency."""

    def col(i: int) -> str:
        name = ""
        i += 1
        while i:
            i, r = divmod(i - 1, 26)
            name = chr(65 + r) + name
        return name

    def cell(ref: str, v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, int | float) and not isinstance(v, bool):
            return f'<c r="{ref}"><v>{v}</v></c>'
        text = _XML_BAD.sub("", str(v))
        return f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{escape(text)}</t></is></c>'

    body = "".join(
        f'<row r="{r + 1}">' + "".join(cell(f"{col(c)}{r + 1}", v) for c, v in enumerate(row)) + "</row>"
        for r, row in enumerate(rows)
    )
    ns = "http://schemas.openxmlformats.org"
    parts = {
        "[Content_Types].xml": f'<Types xmlns="{ns}/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>',
        "_rels/.rels": f'<Relationships xmlns="{ns}/package/2006/relationships"><Relationship Id="rId1" '
        f'Type="{ns}/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>',
        "xl/workbook.xml": f'<workbook xmlns="{ns}/spreadsheetml/2006/main" '
        f'xmlns:r="{ns}/officeDocument/2006/relationships"><sheets>'
        '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": f'<Relationships xmlns="{ns}/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{ns}/officeDocument/2006/relationships/worksheet" '
        'Target="worksheets/sheet1.xml"/></Relationships>',
        "xl/worksheets/sheet1.xml": f'<worksheet xmlns="{ns}/spreadsheetml/2006/main"><sheetData>{body}'
        "</sheetData></worksheet>",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, xml in parts.items():
            z.writestr(name, '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + xml)
    return path


def read_tsv(path: Path) -> list[dict[str, Any]]:
    """The rows as ``pd.read_table`` gives them (missing cells = float NaN). Cells are read as text, so
    an all-numeric option column keeps its spelling (the original would fail on it)."""
    try:
        import pandas as pd
    except ImportError as e:  # the eval extra
        raise ImportError("reading an MMBench TSV needs pandas: pip install 'llava15[eval]'") from e
    return pd.read_table(path, dtype=str).to_dict("records")


_HUB_COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category"]


def hub_rows(src: Source) -> list[dict[str, Any]]:
    """The Hub split's rows with missing cells (None, "nan") as NaN, as the TSV reads."""
    rows = src.table().rows(_HUB_COLUMNS)
    for r in rows:
        for k in _HUB_COLUMNS[2:]:
            if r[k] is None or r[k] == "nan":
                r[k] = math.nan
    return rows


class MMBench(Benchmark):
    name = "mmbench"
    title = "MMB"
    folder = "mmbench"
    question_file = tsv_name = "mmbench_dev_20230712.tsv"
    suffix = LETTER_ANSWER
    max_new_tokens = 1024
    pads_before_rgb = True

    def tsv_path(self, data_root: str | Path | Source) -> Path:
        """The dev TSV of the paper, or the ``--question-file`` given; missing = an error naming it."""
        src = self.locate(data_root)
        if src.question_file is None or not src.question_file.exists():
            raise MissingData(self.missing_message(src, [src.question_file]))
        return src.question_file

    def _rows(self, src: Source) -> list[dict[str, Any]]:
        return hub_rows(src) if src.kind == "hub" else read_tsv(self.tsv_path(src))

    def _official(self, src: Source) -> list[Question]:
        return [self._question(row, {"image_b64": row.get("image")}) for row in self._rows(src)]

    def _hub(self, src: Source) -> list[Question]:
        table = src.table()
        return [self._question(row, {"hub_image": (table, i, "image", None)}) for i, row in enumerate(self._rows(src))]

    def _question(self, row: dict[str, Any], image: dict[str, Any]) -> Question:
        """``model_vqa_mmbench.py``'s prompt for one row (``is_none`` as the original)."""
        options = []
        for letter in "ABCD":
            if is_none(row.get(letter)):
                break
            options.append(row[letter])
        question = row["question"]
        if not is_none(row.get("hint")):
            question = row["hint"] + "\n" + question
        for letter, option in zip("ABCD", options):
            question += f"\n{letter}. {option}"
        extra = {"record_prompt": question, "options": options, "option_char": list("ABCD"[: len(options)]),
                 **image}  # fmt: skip
        return Question(int(hub_id(row["index"])), None, IMAGE_PREFIX + question + "\n" + self.suffix,
                        self.max_new_tokens, extra)  # fmt: skip

    def open_image(self, question: Question) -> Any:
        from PIL import Image

        if "hub_image" in question.extra:
            return super().open_image(question)
        data = question.extra.get("image_b64")
        if is_na(data) or not data:
            raise ValueError(f"{self.name}: row {question.id} has no base64 image")
        # model_vqa_mmbench.py does not .convert("RGB"): padding happens in the image's own mode.
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            im.load()
            return im.copy()

    def answer_record(self, question, text, model_id):
        return {
            "question_id": question.id, "round_id": 0, "prompt": question.extra["record_prompt"],
            "text": text, "options": question.extra["options"], "option_char": question.extra["option_char"],
            "answer_id": answer_id(self.name, question.id, text), "model_id": model_id, "metadata": {},
        }  # fmt: skip

    def score(
        self,
        answers: list[dict[str, Any]],
        data_root: str | Path,
        out_dir: Path | None = None,
        judge: Any = None,
    ) -> dict[str, Any]:
        src = self.locate(data_root)
        rows = self._rows(src)
        for r in rows:
            r["index"] = int(hub_id(r["index"]))
        preds = {str(a["question_id"]): a["text"] for a in answers}
        files = {}
        if out_dir is not None:
            files["submission"] = str(self._write_submission(rows, preds, Path(out_dir)))
        has_answers = rows and "answer" in rows[0] and not all(is_na(r.get("answer")) for r in rows)
        if not has_answers:
            res = result(self.name, "submission", None, {}, files=files,
                         notes=["no answers in the TSV (test split): upload the submission file"])  # fmt: skip
            return with_source(res, src)
        scored = [{**r, "prediction": preds.get(str(r["index"]), "")} for r in rows]
        m = mmbench_circular(scored)
        groups = m.pop("groups")
        category = {r["index"] % 1_000_000: r.get("category") for r in sorted(rows, key=lambda r: -r["index"])}
        unit_rows = [[str(k), "" if is_na(category.get(k)) else str(category.get(k)), int(v)]
                     for k, v in groups.items()]  # fmt: skip
        missing = sum(1 for r in rows if str(r["index"]) not in preds)
        notes = [f"{missing} rows unanswered (counted wrong)"] if missing else []
        res = result(self.name, "scored", 100 * m["circular"], m, files=files, notes=notes,
                     bootstrap={**units("mean", unit_rows), "unit": "circular group"})  # fmt: skip
        return with_source(res, src)

    def _write_submission(self, rows: list[dict[str, str]], preds: dict[str, str], out_dir: Path) -> Path:
        """``convert_mmbench_for_submission.py``: the TSV minus six columns, ``prediction`` at column 6."""
        columns = [c for c in rows[0] if c not in _DROP] if rows else []
        columns.insert(min(6, len(columns)), "prediction")

        def value(r: dict[str, str], c: str) -> Any:
            if c == "prediction":
                return preds.get(str(r["index"]))
            if c == "index":
                return int(r["index"])
            return None if is_na(r.get(c)) else r[c]  # NA cell = NaN = empty xlsx cell

        table = [[value(r, c) for c in columns] for r in rows]
        path = out_dir / f"{self.name}_submission.xlsx"
        write_xlsx(path, [columns, *table])
        return path
