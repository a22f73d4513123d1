"""What every benchmark module provides, and the file helpers they share.

A benchmark reads its data from a :class:`Source`: the official files under the evaluation root
(``playground/data/eval/<folder>/`` as the original ``docs/Evaluation.md`` lays it out), or the
lmms-lab dataset of the same benchmark (a local snapshot ``<data root>/lmms-lab/<Name>`` or, with
``--data-root hf``, the Hub; :mod:`llava15.eval.hub`), detected per benchmark (official first). It turns
them into :class:`Question` s whose ``prompt_text`` is the user message exactly as the original eval
script builds it (Table 8 suffix, ``<image>\\n`` prefix), writes each answer as the original script's
JSONL record, and scores a list of such records (from our runner, the original code or anything else
that writes ``question_id`` + ``text``). Both sources give the same prompts, records and metrics.

``score`` returns a result dict: ``benchmark``, ``status`` (``scored`` | ``submission`` | ``skipped``),
``value`` (the Table 2 number, in the paper's units, or None), ``metrics``, ``files`` (written paths),
``notes``, ``data`` (which source), and ``bootstrap`` (the units a confidence interval resamples,
:mod:`llava15.eval.bootstrap`). A judged benchmark without a judge is ``skipped``, never 0.
``check(data)`` lists what is missing before any model is loaded.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llava15.eval.hub import HUB_ROOT, HUB_SPECS, HubSpec, HubTable, find_snapshot, open_table, snapshot_files

IMAGE_PREFIX = "<image>\n"
SHORT_ANSWER = "Answer the question using a single word or phrase."
LETTER_ANSWER = "Answer with the option's letter from the given choices directly."
LETTER_ANSWER_CN = "请直接回答选项字母。"


@dataclass
class Question:
    """One generation request, built as the original eval script builds it."""

    id: Any
    """``question_id`` as in the official file (int or str, kept as is for the answer record)."""
    image_path: Path | None
    """Absolute image path; None for text-only questions or images carried in ``extra``."""
    prompt_text: str
    """The user message: ``<image>\\n`` + question + response-format suffix."""
    max_new_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)
    """``record_prompt`` (the ``prompt`` field the original writes), ``hub_image`` ((table, row, column,
    frame) of an embedded image) and benchmark-specific fields."""


class MissingData(FileNotFoundError):
    """A benchmark's data is absent or incomplete; the message names what and where."""


@dataclass
class Source:
    """Where one benchmark's data is read from."""

    kind: str
    """``official`` or ``hub``."""
    root: Path
    """Official: the benchmark folder under the evaluation root. Hub: the snapshot folder (or repo id)."""
    question_file: Path | None = None
    """Official: the question file (the default one, or ``--question-file``)."""
    spec: HubSpec | None = None
    remote: bool = False
    _tables: dict[str | None, HubTable] = field(default_factory=dict, repr=False)

    def table(self, config: str | None = None) -> HubTable:
        """The Hub split (``config`` = another config of the same repo, e.g. GQA's images)."""
        assert self.spec is not None
        if config not in self._tables:
            self._tables[config] = open_table(self.spec, None if self.remote else self.root, config)
        return self._tables[config]

    def describe(self) -> str:
        if self.kind == "official":
            return f"official layout: {self.question_file}"
        assert self.spec is not None
        where = "the Hub" if self.remote else f"local snapshot {self.root}"
        return f"{self.spec.name} from {where}" + (f"; {self.spec.note}" if self.spec.note else "")


class Benchmark:
    """Base class: subclasses set the class attributes and implement the ``_official``/``_hub`` loaders
    and ``score``."""

    name: str = ""
    title: str = ""
    """Column name in the paper's Table 2."""
    folder: str = ""
    """Folder under the evaluation root."""
    max_new_tokens: int = 128
    judged: bool = False
    question_file: str = ""
    """The official question file under ``folder`` (``--question-file`` passes another)."""
    image_dir: str = ""
    """Its image folder under ``folder`` ("" = ``folder`` itself)."""
    score_files: tuple[str, ...] = ()
    """Official files under ``folder`` that scoring needs (checked before a run)."""
    pads_before_rgb: bool = False
    """The original script opens images without ``.convert('RGB')`` (ScienceQA, MMBench): padding then
    happens in the image's own mode (:func:`llava15.data.images.pad_then_rgb`)."""

    # ---- where the data is
    def root(self, data_root: str | Path) -> Path:
        return eval_root(data_root) / self.folder

    def locate(self, data: str | Path | Source, question_file: str | Path | None = None) -> Source:
        """The official layout when its question file is there (or ``question_file`` is given), else an
        lmms-lab snapshot under the data root, else (``hf``) the Hub; missing data is reported by
        ``check``/``load`` naming the official file."""
        if isinstance(data, Source):
            return data
        specs = HUB_SPECS.get(self.name, ())
        if str(data) == HUB_ROOT and specs:
            return Source("hub", Path(specs[0].repo), spec=specs[0], remote=True)
        root = self.root(data)
        qfile = Path(question_file) if question_file else root / self.question_file
        if question_file or qfile.exists():
            return Source("official", root, qfile)
        found = find_snapshot(data, specs)
        if found is not None:
            return Source("hub", found[1], spec=found[0])
        return Source("official", root, qfile)

    def load(self, data: str | Path | Source, question_file: str | Path | None = None) -> list[Question]:
        src = self.locate(data, question_file)
        if src.kind == "hub":
            return self._hub(src)
        if not src.question_file or not src.question_file.exists():
            raise MissingData(self.missing_message(src, [src.question_file]))
        return self._official(src)

    def _official(self, src: Source) -> list[Question]:
        """Questions of a ``model_vqa_loader.py``-style question file; other layouts override."""
        return loader_questions(src.question_file, src.root / self.image_dir, self.max_new_tokens)

    def _hub(self, src: Source) -> list[Question]:
        raise NotImplementedError(f"{self.name}: no reader for {src.describe()}")

    def missing_message(self, src: Source, paths: Sequence[Any]) -> str:
        names = ", ".join(str(p) for p in paths)
        hub = HUB_SPECS.get(self.name, ())
        alt = f" (or an lmms-lab snapshot at <data root>/{hub[0].repo})" if hub else ""
        return (f"{self.name}: missing {names}{alt}; pass another question file with "
                f"--question-file {self.name}=PATH")

    def check(self, data: str | Path | Source, question_file: str | Path | None = None,
              limit: int = 0) -> DataCheck:  # fmt: skip
        """Files, question count and images of what a run will ask, without loading a model."""
        src = self.locate(data, question_file)
        check = DataCheck(self.name, src)
        self._check(src, check, limit)
        if check.missing:
            check.message = self.missing_message(src, check.missing)
        return check

    def _check(self, src: Source, check: DataCheck, limit: int) -> None:
        if src.kind == "hub":
            if not src.remote:
                for config in [src.spec.config] + ([src.spec.images_config] if src.spec.images_config else []):
                    if not snapshot_files(src.root, config, src.spec.split):
                        check.missing.append(f"{src.root} ({config or 'default'}/{src.spec.split} parquet files)")
                if check.missing:
                    return
        else:
            needed = [src.question_file, *(src.root / f for f in self.score_files)]
            if self.image_dir:
                needed.append(src.root / self.image_dir)
            check.missing += [str(p) for p in needed if p is None or not p.exists()]
            if check.missing:
                return
        try:
            questions = self.load(src)
        except (ValueError, KeyError, FileNotFoundError) as e:
            check.missing.append(str(e))
            return
        questions = questions[:limit] if limit else questions
        check.questions = questions
        check.n_questions = len(questions)
        if not questions:
            check.missing.append(f"{src.describe()}: no questions")
        absent = sorted({str(q.image_path) for q in questions if q.image_path is not None
                         and not q.image_path.exists()})  # fmt: skip
        if absent:
            check.missing.append(f"{len(absent)} image(s), e.g. {absent[0]}")
        if self.pads_before_rgb and not absent:
            check.image_modes = self.image_modes(questions)

    def image_modes(self, questions: Sequence[Question]) -> Counter:
        """Modes of the distinct non-square images that are not RGB/RGBA, read from the image headers:
        where padding before the RGB conversion (the original's order here) gives other pixels, or, for
        modes whose canvas cannot take an RGB colour (``pads_in_own_mode`` False), where it raises."""
        modes: Counter = Counter()
        seen: set[Any] = set()
        for q in questions:
            key = q.image_path or q.extra.get("image_key") or q.id
            if key in seen or (q.image_path is None and not _has_image(q)):
                continue
            seen.add(key)
            mode, (w, h) = self.image_header(q)
            if w != h and mode not in ("RGB", "RGBA"):
                modes[mode] += 1
        return modes

    def image_header(self, question: Question) -> tuple[str, tuple[int, int]]:
        """Mode and size of a question's image without decoding its pixels."""
        import base64
        import io

        from PIL import Image

        hub = question.extra.get("hub_image")
        if hub is not None:
            table, row, column, frame = hub
            src: Any = io.BytesIO(table.image(row, column, frame))
        elif question.image_path is not None:
            src = question.image_path
        else:
            src = io.BytesIO(base64.b64decode(question.extra["image_b64"]))
        with Image.open(src) as im:
            return im.mode, im.size

    def open_image(self, question: Question) -> Any:
        """The PIL image for a question, or None: RGB (``model_vqa_loader.py`` converts on open), or as
        stored when ``pads_before_rgb``."""
        from PIL import Image

        hub = question.extra.get("hub_image")
        if hub is not None:
            table, row, column, frame = hub
            image = table.open_image(row, column, frame)
        elif question.image_path is None:
            return None
        else:
            with Image.open(question.image_path) as im:
                im.load()
                image = im.copy() if self.pads_before_rgb else im.convert("RGB")
            return image
        return image if self.pads_before_rgb else image.convert("RGB")

    # ---- answers
    def answer_record(self, question: Question, text: str, model_id: str) -> dict[str, Any]:
        """The record the original ``model_vqa*.py`` writes (``answer_id`` made deterministic)."""
        return {
            "question_id": question.id,
            "prompt": question.extra.get("record_prompt", question.prompt_text),
            "text": text,
            "answer_id": answer_id(self.name, question.id, text),
            "model_id": model_id,
            "metadata": {},
        }

    def score(
        self, answers: list[dict[str, Any]], data_root: str | Path | Source, out_dir: Path | None,
        judge: Any = None,
    ) -> dict[str, Any]:
        raise NotImplementedError


@dataclass
class DataCheck:
    """What ``Benchmark.check`` found."""

    benchmark: str
    source: Source
    missing: list[str] = field(default_factory=list)
    n_questions: int = 0
    image_modes: Counter = field(default_factory=Counter)
    message: str = ""
    """One line naming everything missing and how to point at other files (empty when complete)."""
    questions: list[Question] | None = field(default=None, repr=False)
    """The questions a run will ask (``limit`` applied), kept so they are read once."""


def pads_in_own_mode(mode: str) -> bool:
    """Whether ``expand2square`` can pad an image of this mode before converting it (the canvas takes
    the RGB background colour); for L, LA, 1, I;16, ... the original scripts raise instead."""
    from PIL import Image

    try:
        Image.new(mode, (1, 1), (122, 116, 104))
    except (TypeError, ValueError):
        return False
    return True


def _has_image(q: Question) -> bool:
    return "hub_image" in q.extra or bool(q.extra.get("image_b64"))


# ---------------------------------------------------------------------------------------- helpers


def eval_root(data_root: str | Path) -> Path:
    """Accept either the repository-style root (holding ``playground/data/eval``) or that folder."""
    root = Path(data_root)
    nested = root / "playground" / "data" / "eval"
    return nested if nested.is_dir() else root


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what}: expected {path} (official layout playground/data/eval/...)")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {lineno} is not JSON ({e.msg})") from e
    return rows


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_json(path: Path, obj: Any, indent: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
    return path


def answer_id(benchmark: str, question_id: Any, text: str) -> str:
    """Deterministic stand-in for the original's random ``shortuuid`` (so reruns are byte-identical)."""
    return hashlib.sha1(f"{benchmark}\0{question_id}\0{text}".encode()).hexdigest()[:22]


def loader_questions(
    path: Path, image_dir: Path, max_new_tokens: int, keep: Sequence[str] = ("category",)
) -> list[Question]:
    """Questions of a ``model_vqa_loader.py`` / ``model_vqa.py`` question file: ``<image>\\n`` + text."""
    out = []
    for line in read_jsonl(require(path, "question file")):
        for key in ("question_id", "image", "text"):
            if key not in line:
                raise ValueError(f"{path}: question {line.get('question_id')!r} has no field {key!r}")
        extra = {"record_prompt": line["text"], **{k: line[k] for k in keep if k in line}}
        out.append(
            Question(line["question_id"], image_dir / line["image"], IMAGE_PREFIX + line["text"],
                     max_new_tokens, extra)
        )  # fmt: skip
    return out


def recorded_prompts(answers: list[dict[str, Any]], questions: list[dict[str, Any]]) -> list[str]:
    """Each answer's recorded ``prompt``; answers without one (e.g. from vLLM) take the question
    file's text, the k-th answer of a question id pairing with the k-th question of that id."""
    texts: dict[str, list[str]] = {}
    for q in questions:
        texts.setdefault(str(q["question_id"]), []).append(q["text"])
    seen: dict[str, int] = {}
    out = []
    for a in answers:
        qid = str(a["question_id"])
        if "prompt" in a:
            out.append(a["prompt"])
            continue
        k = seen.get(qid, 0)
        seen[qid] = k + 1
        if k >= len(texts.get(qid, [])):
            raise ValueError(f"answer {qid!r} has no 'prompt' and no matching question (occurrence {k + 1})")
        out.append(texts[qid][k])
    return out


def validate_answers(answers: Sequence[dict[str, Any]], benchmark: str, source: str = "answers") -> None:
    """Every record needs ``question_id`` and one of ``text`` (answers), ``tuple`` (LLaVA-Bench reviews)
    or ``score`` (MM-Vet grades); the error names the file, the record and what is missing."""
    for i, a in enumerate(answers):
        if not isinstance(a, dict) or "question_id" not in a or not ({"text", "tuple", "score"} & set(a)):
            raise ValueError(f"{benchmark}: {source} record {i} needs 'question_id' and 'text' "
                             f"(or 'tuple' / 'score'): {str(a)[:120]}")  # fmt: skip


def hub_question(src: Source, row: int, qid: Any, text: str, max_new_tokens: int, image_key: Any = None,
                 column: str = "image", frame: int | None = None, **extra: Any) -> Question:
    """A question whose image is embedded in the Hub split (``text`` = the official question-file text,
    recorded as the answer's ``prompt``)."""
    extra = {"record_prompt": text, "hub_image": (src.table(), row, column, frame), **extra}
    if image_key is not None:
        extra["image_key"] = ("hub", image_key)  # questions about one image share it, as paths do
    return Question(qid, None, IMAGE_PREFIX + text, max_new_tokens, extra)


def hub_id(value: Any) -> Any:
    """A Hub id as the official files write it: decimal strings become ints (POPE, MM-Vet, ...)."""
    if isinstance(value, str) and value.isdigit() and not (len(value) > 1 and value[0] == "0"):
        return int(value)
    return value


def result(
    benchmark: str, status: str, value: float | None, metrics: dict[str, Any], **kw: Any
) -> dict[str, Any]:
    out = {"benchmark": benchmark, "status": status, "value": value, "metrics": metrics}
    out.update({"files": {}, "notes": []} | kw)
    return out


def with_source(res: dict[str, Any], src: Source) -> dict[str, Any]:
    """Record which data a score comes from; a Hub set that differs from the paper's says so."""
    res["data"] = src.describe()
    if src.kind == "hub" and src.spec is not None and src.spec.note:
        res.setdefault("notes", []).append(f"data: {src.spec.note}")
    return res
