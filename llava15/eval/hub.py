"""The lmms-lab evaluation datasets on the Hugging Face Hub: where they are, how to read and verify them.

Contract:
- ``HubSpec(repo, config, split, rows, fields, images_config)`` names one Hub dataset split a benchmark
  reads (``HUB_SPECS[benchmark]`` lists them, preferred first). ``rows`` is the published row count
  (None where it is not pinned); ``fields`` the columns the benchmark needs.
- A local snapshot is the folder ``huggingface-cli download <repo> --repo-type dataset --local-dir
  D/<repo>`` writes (``D/lmms-lab/POPE/data/test-*.parquet`` + ``README.md``). ``snapshot_files`` finds a
  config/split's parquet files from the README's ``configs:`` section (the dataset card is what the
  ``datasets`` library itself follows), else from the usual ``<config>/<split>-*`` and ``data/<split>-*``
  names. ``--data-root hf`` reads the repo id from the Hub instead.
- ``HubTable`` reads a split through ``datasets`` with image columns left undecoded (rows keep their
  parquet order); ``image(row, column)`` returns the raw bytes of one embedded image.
- ``verify_snapshot`` checks files, columns and row counts; ``run_data`` implements ``llava15 eval data``
  (``huggingface_hub.snapshot_download``, which resumes interrupted downloads, then the same checks).
"""

from __future__ import annotations

import argparse
import fnmatch
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class HubSpec:
    repo: str
    config: str | None
    split: str
    rows: int | None
    fields: tuple[str, ...]
    images_config: str | None = None
    """A second config holding the images by id (GQA keeps them apart from the questions)."""
    note: str = ""
    """How this set differs from the paper's (shown with every score read from it)."""

    @property
    def name(self) -> str:
        return f"{self.repo}" + (f" [{self.config}]" if self.config else "") + f" split {self.split}"


_Q = ("question_id", "question", "image")
HUB_SPECS: dict[str, tuple[HubSpec, ...]] = {
    "vqav2": (HubSpec("lmms-lab/VQAv2", None, "testdev", 107394, _Q),),
    "gqa": (HubSpec("lmms-lab/GQA", "testdev_balanced_instructions", "testdev", 12578,
                    ("id", "imageId", "question", "answer"), images_config="testdev_balanced_images"),),
    "vizwiz": (HubSpec("lmms-lab/VizWiz-VQA", None, "test", 8000, _Q),),
    "scienceqa": (HubSpec("lmms-lab/ScienceQA", "ScienceQA-IMG", "test", 2017,
                          ("image", "question", "choices", "answer", "hint"),
                          note="no problem ids on the Hub: question_id is the row number"),),
    "textvqa": (HubSpec("lmms-lab/textvqa", None, "validation", 5000,
                        ("image_id", "question", "answers", "ocr_tokens", "image")),),
    "pope": (HubSpec("lmms-lab/POPE", None, "test", 9000, (*_Q, "answer", "category"),
                     note="9,000 questions (POPE's current label files); the paper's 85.9 used LLaVA's "
                          "8,910 (labels at AoiDragon/POPE@e3e3926)"),),
    "mme": (HubSpec("lmms-lab/MME", None, "test", 2374, (*_Q, "answer", "category")),),
    "mmbench": (
        HubSpec("lmms-lab/MMBench_EN", None, "dev", 4377, ("index", "question", "hint", "A", "B", "answer", "image")),
        HubSpec("lmms-lab/MMBench", "en", "dev", 4329, ("index", "question", "hint", "A", "B", "answer", "image"),
                note="the 20231003 dev set (4,329 rows); the paper's 67.7 is on dev 20230712 (4,377 rows, "
                     "lmms-lab/MMBench_EN)"),
    ),
    "mmbench_cn": (
        HubSpec("lmms-lab/MMBench_CN", None, "dev", 4329, ("index", "question", "hint", "A", "B", "answer", "image")),
        HubSpec("lmms-lab/MMBench", "cn", "dev", 4329, ("index", "question", "hint", "A", "B", "answer", "image")),
    ),
    "seed": (HubSpec("lmms-lab/SEED-Bench", None, "test", None,
                     ("question_id", "question", "choice_a", "choice_b", "choice_c", "choice_d", "answer",
                      "data_type", "question_type_id", "image"),
                     note="the Hub set holds fewer questions than SEED-Bench v1's 19,242 and gives video "
                          "questions as frame lists: the middle frame stands in for LLaVA's extracted frame"),),
    "llava_bench": (HubSpec("lmms-lab/llava-bench-in-the-wild", None, "train", 60,
                            ("question_id", "question", "image", "caption", "gpt_answer", "category")),),
    "mmvet": (HubSpec("lmms-lab/MMVet", None, "test", 218, ("question_id", "question", "image", "answer")),),
}
HUB_ROOT = "hf"
"""``--data-root hf``: read every benchmark from the Hub by repo id."""


def snapshot_dir(data_root: str | Path, spec: HubSpec) -> Path:
    return Path(data_root) / spec.repo


def find_snapshot(data_root: str | Path, specs: tuple[HubSpec, ...]) -> tuple[HubSpec, Path] | None:
    for spec in specs:
        folder = snapshot_dir(data_root, spec)
        if folder.is_dir():
            return spec, folder
    return None


def card_data_files(folder: Path, config: str | None) -> dict[str, list[str]] | None:
    """``{split: [glob, ...]}`` of one config from the snapshot's README front matter (None: no card)."""
    readme = folder / "README.md"
    if not readme.exists():
        return None
    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return None
    try:
        meta = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return None
    for cfg in meta.get("configs") or []:
        if cfg.get("config_name", "default") != (config or "default"):
            continue
        files = cfg.get("data_files") or []
        if isinstance(files, str | dict):
            files = [files]
        out: dict[str, list[str]] = {}
        for entry in files:
            if isinstance(entry, str):
                out.setdefault("train", []).append(entry)
                continue
            paths = entry.get("path", [])
            out.setdefault(entry.get("split", "train"), []).extend([paths] if isinstance(paths, str) else paths)
        return out
    return None


def snapshot_patterns(folder: Path, config: str | None, split: str) -> list[str]:
    card = card_data_files(folder, config)
    if card is not None and split in card:
        return card[split]
    prefix = f"{config}/" if config else ""
    return [f"{prefix}{split}-*", f"{prefix}{split}/*.parquet", f"data/{split}-*"]


def snapshot_files(folder: Path, config: str | None, split: str) -> list[Path]:
    """The split's parquet files in a local snapshot, sorted (= the Hub's shard order)."""
    files = sorted(p for p in folder.rglob("*.parquet") if ".cache" not in p.parts)
    rel = {p: p.relative_to(folder).as_posix() for p in files}
    for pattern in snapshot_patterns(folder, config, split):
        hits = [p for p in files if fnmatch.fnmatch(rel[p], pattern)]
        if hits:
            return hits
    return []


class HubTable:
    """One split read through ``datasets``; images stay encoded until ``image`` is called."""

    def __init__(self, dataset: Any, origin: str) -> None:
        import datasets

        for name, feature in dataset.features.items():
            if isinstance(feature, datasets.Image):
                dataset = dataset.cast_column(name, datasets.Image(decode=False))
            elif isinstance(getattr(feature, "feature", None), datasets.Image):
                dataset = dataset.cast_column(name, datasets.List(datasets.Image(decode=False)))
        self.dataset = dataset
        self.origin = origin
        self._columns: dict[str, list[Any]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def columns(self) -> list[str]:
        return list(self.dataset.column_names)

    def column(self, name: str) -> list[Any]:
        if name not in self._columns:
            if name not in self.dataset.column_names:
                raise KeyError(f"{self.origin}: no column {name!r} (columns: {', '.join(self.columns)})")
            self._columns[name] = list(self.dataset[name])
        return self._columns[name]

    def rows(self, names: list[str]) -> list[dict[str, Any]]:
        """Text columns of every row, in order (a column the split lacks reads as None)."""
        cols = {n: self.column(n) if n in self.dataset.column_names else [None] * len(self) for n in names}
        return [{n: cols[n][i] for n in names} for i in range(len(self))]

    def list_lengths(self, name: str) -> list[int | None]:
        """Per row, the length of a list column (frames of a video question), None for a non-list column;
        read from the arrow table without touching the image bytes."""
        import pyarrow as pa
        import pyarrow.compute as pc

        col = self.dataset.data.column(name)
        if not pa.types.is_list(col.type) and not pa.types.is_large_list(col.type):
            return [None] * len(self)
        return pc.list_value_length(col).to_pylist()

    def image(self, row: int, column: str = "image", frame: int | None = None) -> bytes:
        value = self.dataset[row][column]
        if frame is not None:
            value = value[frame]
        if not value or not (value.get("bytes") or value.get("path")):
            raise ValueError(f"{self.origin}: row {row} has no image in column {column!r}")
        if value.get("bytes"):
            return value["bytes"]
        return Path(value["path"]).read_bytes()

    def open_image(self, row: int, column: str = "image", frame: int | None = None) -> Any:
        from PIL import Image

        image = Image.open(io.BytesIO(self.image(row, column, frame)))
        image.load()
        return image


def open_table(spec: HubSpec, folder: Path | None, config: str | None = None) -> HubTable:
    """A split from a local snapshot folder, or from the Hub when ``folder`` is None."""
    try:
        import datasets
    except ImportError as e:  # the eval extra
        raise ImportError("reading lmms-lab datasets needs `datasets`: pip install 'llava15[eval]'") from e

    datasets.disable_progress_bars()
    config = config or spec.config
    if folder is None:
        ds = datasets.load_dataset(spec.repo, config, split=spec.split)
        return HubTable(ds, f"{spec.repo} (Hub)")
    files = snapshot_files(folder, config, spec.split)
    if not files:
        raise FileNotFoundError(f"{folder}: no parquet files for config {config or 'default'!r} split "
                                f"{spec.split!r} (expected e.g. {snapshot_patterns(folder, config, spec.split)[0]})")
    ds = datasets.load_dataset("parquet", data_files={spec.split: [str(f) for f in files]}, split=spec.split)
    return HubTable(ds, str(folder))


# ------------------------------------------------------------------------------------ verification


@dataclass
class SnapshotCheck:
    spec: HubSpec
    folder: Path
    files: list[Path] = field(default_factory=list)
    rows: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_snapshot(spec: HubSpec, folder: Path) -> SnapshotCheck:
    """Files present, the benchmark's columns in every file's schema, and the published row count."""
    import pyarrow.parquet as pq

    check = SnapshotCheck(spec, folder)
    configs = [spec.config] + ([spec.images_config] if spec.images_config else [])
    for config in configs:
        files = snapshot_files(folder, config, spec.split)
        if not files:
            pattern = snapshot_patterns(folder, config, spec.split)[0]
            check.problems.append(f"no parquet files for {config or 'default'}/{spec.split} under {folder} "
                                  f"(expected {pattern})")
            continue
        check.files += files
        if config != spec.config:
            continue
        for f in files:
            try:
                meta = pq.ParquetFile(f)
            except Exception as e:  # a torn download: name the file
                check.problems.append(f"{f}: not a readable parquet file ({e})")
                continue
            check.rows += meta.metadata.num_rows
            absent = [c for c in spec.fields if c not in meta.schema_arrow.names]
            if absent:
                check.problems.append(f"{f}: missing column(s) {', '.join(absent)}")
    if spec.rows is not None and check.rows and check.rows != spec.rows and not check.problems:
        check.problems.append(f"{spec.name}: {check.rows} rows, expected {spec.rows}")
    return check


def download(spec: HubSpec, folder: Path) -> None:
    """``snapshot_download`` of the card, then of the split's files (it skips complete files and resumes
    partial ones, so rerunning after an interruption continues where it stopped)."""
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id=spec.repo, repo_type="dataset", local_dir=folder, allow_patterns=["README.md"])
    patterns = []
    for config in [spec.config] + ([spec.images_config] if spec.images_config else []):
        patterns += snapshot_patterns(folder, config, spec.split)
    snapshot_download(repo_id=spec.repo, repo_type="dataset", local_dir=folder, allow_patterns=patterns)


def run_data(args: argparse.Namespace) -> int:
    """``llava15 eval data --benchmarks B --out DIR [--verify-only]``."""
    names = [n.strip() for n in args.benchmarks.split(",") if n.strip()]
    unknown = [n for n in names if n not in HUB_SPECS]
    if unknown:
        print(f"error: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(HUB_SPECS)}")
        return 2
    out = Path(args.out)
    status = 0
    for name in names:
        spec = HUB_SPECS[name][0]
        folder = snapshot_dir(out, spec)
        if not getattr(args, "verify_only", False):
            print(f"{name}: downloading {spec.name} to {folder}", flush=True)
            download(spec, folder)
        check = verify_snapshot(spec, folder)
        expected = "" if spec.rows is None else f" of {spec.rows}"
        if check.ok:
            print(f"{name}: ok, {spec.name}: {check.rows}{expected} rows in {len(check.files)} file(s) at {folder}")
        else:
            status = 1
            for problem in check.problems:
                print(f"{name}: {problem}")
    return status
