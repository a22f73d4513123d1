"""Build lmms-lab dataset snapshots on disk, laid out as ``huggingface-cli download <repo> --repo-type
dataset --local-dir <root>/<repo>`` writes them (``README.md`` with the card's ``configs:`` + parquet
shards), with the features of the published dataset cards."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import datasets
from PIL import Image

V = datasets.Value
IMAGE = datasets.Image()

FEATURES = {
    "lmms-lab/POPE": {"id": V("string"), "question_id": V("string"), "question": V("string"),
                      "answer": V("string"), "image_source": V("string"), "image": IMAGE,
                      "category": V("string")},
    "lmms-lab/MME": {"question_id": V("string"), "image": IMAGE, "question": V("string"), "answer": V("string"),
                     "category": V("string")},
    "lmms-lab/GQA": {"id": V("string"), "imageId": V("string"), "question": V("string"), "answer": V("string"),
                     "fullAnswer": V("string"), "isBalanced": V("bool")},
    "lmms-lab/GQA#images": {"id": V("string"), "image": IMAGE},
    "lmms-lab/VQAv2": {"question_type": V("string"), "multiple_choice_answer": V("string"),
                       "answers": datasets.List({"answer": V("string"), "answer_confidence": V("string"),
                                                 "answer_id": V("int64")}),
                       "image_id": V("int64"), "answer_type": V("string"), "question_id": V("int64"),
                       "question": V("string"), "image": IMAGE},
    "lmms-lab/VizWiz-VQA": {"question_id": V("string"), "image": IMAGE, "question": V("string"),
                            "answers": datasets.List(V("string")), "category": V("string")},
    "lmms-lab/ScienceQA": {"image": IMAGE, "question": V("string"), "choices": datasets.List(V("string")),
                           "answer": V("int8"), "hint": V("string"), "task": V("string"), "grade": V("string"),
                           "subject": V("string"), "topic": V("string"), "category": V("string"),
                           "skill": V("string"), "lecture": V("string"), "solution": V("string")},
    "lmms-lab/textvqa": {"image_id": V("string"), "question_id": V("int32"), "question": V("string"),
                         "question_tokens": datasets.List(V("string")), "image": IMAGE, "image_width": V("int32"),
                         "image_height": V("int32"), "flickr_original_url": V("string"),
                         "flickr_300k_url": V("string"), "answers": datasets.List(V("string")),
                         "image_classes": datasets.List(V("string")), "set_name": V("string"),
                         "ocr_tokens": datasets.List(V("string"))},
    "lmms-lab/MMBench_EN": {"index": V("int64"), "question": V("string"), "hint": V("string"), "A": V("string"),
                            "B": V("string"), "C": V("string"), "D": V("string"), "answer": V("string"),
                            "category": V("string"), "image": IMAGE, "source": V("string"),
                            "l2-category": V("string"), "comment": V("string"), "split": V("string")},
    "lmms-lab/SEED-Bench": {"answer": V("string"), "choice_a": V("string"), "choice_b": V("string"),
                            "choice_c": V("string"), "choice_d": V("string"), "data_id": V("string"),
                            "data_type": V("string"), "question": V("string"), "question_id": V("string"),
                            "question_type_id": V("int16"), "image": datasets.List(IMAGE), "segment": V("string")},
    "lmms-lab/llava-bench-in-the-wild": {"question_id": V("int8"), "question": V("string"), "image": IMAGE,
                                         "caption": V("string"), "gpt_answer": V("string"),
                                         "category": V("string"), "image_id": V("string")},
    "lmms-lab/MMVet": {"question_id": V("string"), "image": IMAGE, "question": V("string"), "answer": V("string"),
                       "image_source": V("string"), "capability": V("string")},
}  # fmt: skip


def png(colour=(10, 20, 30), size=(12, 8), mode: str = "RGB") -> dict[str, Any]:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).convert(mode).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def write_snapshot(root: Path, repo: str, split: str, rows: list[dict[str, Any]], config: str | None = None,
                   shards: int = 1, features_key: str | None = None) -> Path:  # fmt: skip
    """``<root>/<repo>/`` with README.md (``configs:`` pointing at the files) and ``shards`` parquet files:
    ``<config or data>/<split>-0000i-of-0000n.parquet``."""
    folder = root / repo
    sub = config or "data"
    ds = datasets.Dataset.from_list(rows, features=datasets.Features(FEATURES[features_key or repo]))
    per = -(-len(rows) // shards)
    (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(shards):
        part = ds.select(range(i * per, min(len(rows), (i + 1) * per)))
        part.to_parquet(str(folder / sub / f"{split}-{i:05d}-of-{shards:05d}.parquet"))
    readme = folder / "README.md"
    entry = f"- config_name: {config or 'default'}\n  data_files:\n  - split: {split}\n    path: {sub}/{split}-*\n"
    text = readme.read_text().split("---\n")[1] if readme.exists() else "configs:\n"
    readme.write_text("---\n" + text + entry + "---\n# card\n")
    return folder
