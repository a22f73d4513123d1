"""MMBench (English, dev 20230712): multiple choice with circular evaluation.

Layout: ``mmbench/mmbench_dev_20230712.tsv`` (columns ``index, question, hint, A..D, answer, ..., image``
with the image base64-encoded; the rotated circular copies are rows of their own, ``index`` + k·1e6).
Prompt = ``model_vqa_mmbench.py --single-pred-prompt``: ``{hint}\\n`` (if any) + question +
``\\n{letter}. {option}`` for A..D up to the first missing one, then the language's letter instruction;
1024 new tokens; each row asked once. Scoring: the upload file of ``convert_mmbench_for_submission.py``
is always written; dev answers are public, so the circular score is also computed locally (VLMEvalKit
exact matching; rows it cannot parse count as wrong, no LLM fallback).
"""

from __future__ import annotations

import base64
import csv
import io
import re
import sys
import zipfile
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from llava15.eval.benchmarks.base import (
    IMAGE_PREFIX,
    LETTER_ANSWER,
    Benchmark,
    Question,
    answer_id,
    require,
    result,
)
from llava15.eval.metrics import is_missing, mmbench_circular

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


def read_tsv(path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(sys.maxsize)  # base64 images are far longer than csv's default limit
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


class MMBench(Benchmark):
    name = "mmbench"
    title = "MMB"
    folder = "mmbench"
    tsv_name = "mmbench_dev_20230712.tsv"
    suffix = LETTER_ANSWER
    max_new_tokens = 1024

    def tsv_path(self, data_root) -> Path:
        """The dev TSV of the paper; otherwise the folder's only TSV (e.g. a test split for the server)."""
        path = self.root(data_root) / self.tsv_name
        others = sorted(path.parent.glob("*.tsv")) if not path.exists() and path.parent.is_dir() else []
        return others[0] if len(others) == 1 else require(path, f"{self.title} TSV")

    def load(self, data_root: str | Path) -> list[Question]:
        out = []
        for row in read_tsv(self.tsv_path(data_root)):
            options = []
            for letter in "ABCD":
                if is_missing(row.get(letter)):
                    break
                options.append(row[letter])
            question = row["question"]
            if not is_missing(row.get("hint")):
                question = row["hint"] + "\n" + question
            for letter, option in zip("ABCD", options):
                question += f"\n{letter}. {option}"
            extra = {
                "record_prompt": question, "options": options, "option_char": list("ABCD"[: len(options)]),
                "image_b64": row.get("image", ""),
            }  # fmt: skip
            out.append(Question(int(row["index"]), None, IMAGE_PREFIX + question + "\n" + self.suffix,
                                self.max_new_tokens, extra))  # fmt: skip
        return out

    def open_image(self, question: Question) -> Any:
        from PIL import Image

        data = question.extra.get("image_b64")
        if not data:
            raise ValueError(f"{self.name}: row {question.id} has no base64 image")
        # model_vqa_mmbench.py does not .convert("RGB"); the CLIP processor converts afterwards anyway.
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            return im.convert("RGB")

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
        rows = read_tsv(self.tsv_path(data_root))
        preds = {str(a["question_id"]): a["text"] for a in answers}
        files = {}
        if out_dir is not None:
            files["submission"] = str(self._write_submission(rows, preds, Path(out_dir)))
        has_answers = rows and "answer" in rows[0] and not all(is_missing(r.get("answer")) for r in rows)
        if not has_answers:
            return result(self.name, "submission", None, {}, files=files,
                          notes=["no answers in the TSV (test split): upload the submission file"])  # fmt: skip
        scored = [{**r, "prediction": preds.get(str(r["index"]), "")} for r in rows]
        m = mmbench_circular(scored)
        missing = sum(1 for r in rows if str(r["index"]) not in preds)
        notes = [f"{missing} rows unanswered (counted wrong)"] if missing else []
        return result(self.name, "scored", 100 * m["circular"], m, files=files, notes=notes)

    def _write_submission(self, rows: list[dict[str, str]], preds: dict[str, str], out_dir: Path) -> Path:
        """``convert_mmbench_for_submission.py``: the TSV minus six columns, ``prediction`` at column 6."""
        columns = [c for c in rows[0] if c not in _DROP] if rows else []
        columns.insert(min(6, len(columns)), "prediction")

        def value(r: dict[str, str], c: str) -> Any:
            if c == "prediction":
                return preds.get(str(r["index"]))
            if c == "index":
                return int(r["index"])
            return None if r.get(c) in (None, "") else r[c]  # empty TSV cell = NaN = empty xlsx cell

        table = [[value(r, c) for c in columns] for r in rows]
        path = out_dir / f"{self.name}_submission.xlsx"
        write_xlsx(path, [columns, *table])
        return path
