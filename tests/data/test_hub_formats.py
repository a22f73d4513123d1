"""Training data as users have it on the Hub: the `messages` + `images` schema (TRL / HF VLM datasets,
images embedded in parquet) and `hf://` paths. The same conversations must give the same ids, labels
and pixels as LLaVA JSON, and train through `data.path`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from local_servers import LocalServer
from PIL import Image

from llava15.data.conversation import DataError
from llava15.data.formats import open_hf, read_records, record_to_conversation
from llava15.data.images import ImageSettings

REPO = Path(__file__).resolve().parents[2]
N_IMG = 4


def _image(seed: int, fmt: str) -> bytes:
    img = Image.new("RGB", (30 + 7 * seed, 24), (200, 40 + 30 * seed, 60))
    img.paste(Image.new("RGB", (8, 8), (20, 200, 30)), (3 + seed, 5))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def text(t: str) -> dict:
    return {"type": "text", "text": t}


IMAGE = {"type": "image", "text": None}

# (LLaVA record, the same conversation in the messages schema, image seeds)
PAIRS = [
    ({"conversations": [{"from": "human", "value": "<image>\nWhat colour is the square?"},
                        {"from": "gpt", "value": "The square is green."}]},
     [("user", [IMAGE, text("What colour is the square?")]), ("assistant", [text("The square is green.")])], [0]),
    ({"conversations": [{"from": "human", "value": "Describe the picture.\n<image>"},
                        {"from": "gpt", "value": "A red picture with a green square."}]},
     [("user", [text("Describe the picture."), IMAGE]), ("assistant", [text("A red picture with a green square.")])],
     [1]),
    ({"conversations": [{"from": "system", "value": "You answer briefly."},
                        {"from": "human", "value": "<image>\nHow many squares?"}, {"from": "gpt", "value": "1"},
                        {"from": "human", "value": "Which colour is it?"}, {"from": "gpt", "value": "Green."}]},
     [("system", [text("You answer briefly.")]), ("user", [IMAGE, text("How many squares?")]),
      ("assistant", [text("1")]), ("user", [text("Which colour is it?")]), ("assistant", [text("Green.")])], [2]),
    ({"conversations": [{"from": "human", "value": "What is the capital of France?"},
                        {"from": "gpt", "value": "The capital of France is Paris."}]},
     [("user", [text("What is the capital of France?")]), ("assistant", [text("The capital of France is Paris.")])],
     []),
    ({"conversations": [{"from": "human", "value": "<image>\n<image>\nAre the two pictures the same?"},
                        {"from": "gpt", "value": "No, the squares are in different places."}]},
     [("user", [IMAGE, IMAGE, text("Are the two pictures the same?")]),
      ("assistant", [text("No, the squares are in different places.")])], [3, 4]),
]


def write_both(folder: Path) -> tuple[Path, Path, Path]:
    """The same conversations as LLaVA JSON (+ image files) and as messages+images parquet."""
    import datasets

    images = folder / "images"
    images.mkdir(parents=True)
    records, rows = [], []
    for i, (rec, messages, seeds) in enumerate(PAIRS):
        data = [_image(s, "PNG" if s % 2 else "JPEG") for s in seeds]
        names = [f"{i}_{j}.img" for j in range(len(seeds))]
        for name, d in zip(names, data):
            (images / name).write_bytes(d)
        records.append({"id": str(i), **({"image": names[0] if len(names) == 1 else names} if names else {}), **rec})
        rows.append({"id": str(i), "messages": [{"role": r, "content": c} for r, c in messages],
                     "images": [{"bytes": d, "path": None} for d in data]})
    (folder / "data.json").write_text(json.dumps(records))
    features = datasets.Features({
        "id": datasets.Value("string"),
        "messages": datasets.List({"role": datasets.Value("string"),
                                   "content": datasets.List({"type": datasets.Value("string"),
                                                             "text": datasets.Value("string")})}),
        "images": datasets.List(datasets.Image())})
    parquet = folder / "train-00000-of-00001.parquet"
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(parquet))
    return folder / "data.json", images, parquet


@pytest.fixture(scope="module")
def tiny(tiny_train_models):
    return tiny_train_models


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    return write_both(tmp_path_factory.mktemp("both"))


def _dataset(path, image_folder, llama):
    from transformers import AutoTokenizer

    from llava15.data.check import image_token_id_for
    from llava15.data.dataset import LlavaDataset

    tok = AutoTokenizer.from_pretrained(llama)
    return LlavaDataset(path, tok, "vicuna_v1", image_token_id_for(tok), image_folder=image_folder,
                        num_image_tokens=N_IMG, image=ImageSettings(size=56), bad_records="fail")


def _same_samples(a, b) -> None:
    import torch

    assert len(a) == len(b) == len(PAIRS) and a.modality_lengths == b.modality_lengths
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert x["input_ids"].tolist() == y["input_ids"].tolist(), i
        assert x["labels"].tolist() == y["labels"].tolist(), i
        assert (x["pixel_values"] is None) == (y["pixel_values"] is None)
        if x["pixel_values"] is not None:
            assert torch.equal(x["pixel_values"], y["pixel_values"])


def test_messages_parquet_gives_the_same_ids_labels_and_pixels_as_llava_json(both, tiny):
    json_path, images, parquet = both
    a, b = _dataset(json_path, images, tiny["llama"]), _dataset(parquet, None, tiny["llama"])
    _same_samples(a, b)
    assert sum(x != -100 for x in b[2]["labels"].tolist()) > 0 and b[4]["pixel_values"].shape[0] == 2


def test_parquet_is_read_memory_mapped_with_images_undecoded(both):
    from datasets.table import MemoryMappedTable

    ds = open_hf(both[2])
    assert isinstance(ds.data, MemoryMappedTable)  # rows are read from disk, nothing is loaded whole
    assert isinstance(ds[0]["images"][0]["bytes"], bytes)


def test_messages_parquet_trains_through_data_path(both, tiny, tmp_path):
    from llava15.cli import main

    out = tmp_path / "run"
    overrides = {"model.vision_tower": tiny["clip"], "model.llm": tiny["llama"], "data.path": both[2],
                 "data.image_folder": "", "train.output_dir": out, "train.max_steps": 2, "train.global_batch_size": 2,
                 "train.micro_batch_size": 2, "train.device": "cpu", "data.bad_records": "fail"}
    assert main(["train", str(REPO / "recipes/tiny_cpu.yaml"), *[f"{k}={v}" for k, v in overrides.items()]]) == 0
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(x == x for x in losses)


def test_string_content_and_errors_name_the_field(tmp_path):
    plain = {"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello."}]}
    parts = {"messages": [{"role": "user", "content": [text("Hi there")]},
                          {"role": "assistant", "content": [text("Hello.")]}]}
    assert record_to_conversation(plain, 0).messages == record_to_conversation(parts, 0).messages
    bad = {"id": "v1", "messages": [{"role": "user", "content": [{"type": "video"}]},
                                    {"role": "assistant", "content": "x"}], "images": []}
    with pytest.raises(DataError, match=r"record 'v1', field 'messages\[0\].content\[0\].type'.*'video'"):
        record_to_conversation(bad, 0, "train.parquet")
    short = {"messages": [{"role": "user", "content": [IMAGE, IMAGE, text("Q")]},
                          {"role": "assistant", "content": "A"}], "images": [{"bytes": b"x", "path": None}]}
    with pytest.raises(DataError, match=r"field 'images'.*2 <image> marker\(s\) in the text but 1 image"):
        record_to_conversation(short, 0)


@pytest.fixture
def hub(both, tmp_path, monkeypatch):
    server = LocalServer()
    json_path, _, parquet = both
    server.add_hub_file("org/tiny-vlm", "README.md", b"# tiny")
    server.add_hub_file("org/tiny-vlm", "data/train-00000-of-00001.parquet", parquet.read_bytes())
    test_rows = [{"messages": [{"role": "user", "content": [text("Only in test?")]},
                               {"role": "assistant", "content": [text("Yes.")]}], "images": []}]
    test_parquet = tmp_path / "test.parquet"
    import datasets

    datasets.Dataset.from_list(test_rows).to_parquet(str(test_parquet))
    server.add_hub_file("org/tiny-vlm", "data/test-00000-of-00001.parquet", test_parquet.read_bytes())
    server.add_hub_file("org/tiny-llava", "llava_instruct.json", json_path.read_bytes())
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    yield server
    server.close()


def test_hf_paths_read_the_hub_dataset_through_the_local_endpoint(hub, both, tiny):
    json_path, images, parquet = both
    local = _dataset(parquet, None, tiny["llama"])
    _same_samples(_dataset("hf://org/tiny-vlm", None, tiny["llama"]), local)  # the train split is chosen
    _same_samples(_dataset("org/tiny-vlm", None, tiny["llama"]), local)  # a bare id reads the same
    _same_samples(_dataset("hf://org/tiny-llava/llava_instruct.json", images, tiny["llama"]),
                  _dataset(json_path, images, tiny["llama"]))
    only_test = [r for _, r in read_records("hf://org/tiny-vlm/data/test-00000-of-00001.parquet")]
    assert [m["content"][0]["text"] for m in only_test[0]["messages"]] == ["Only in test?", "Yes."]
    parquet_gets = [e for e in hub.requests("/lfs/", "GET")]
    before = len(parquet_gets)
    _dataset("hf://org/tiny-vlm", None, tiny["llama"])
    assert len(hub.requests("/lfs/", "GET")) == before  # cached: nothing fetched again
    with pytest.raises(DataError, match=r"hf://org/missing.*RepositoryNotFound|hf://org/missing.*404"):
        list(read_records("hf://org/missing"))


def test_a_repo_without_parquet_or_json_is_read_with_datasets_load_dataset(hub, both, tmp_path):
    """`datasets` reads HF_ENDPOINT once, at import: a fresh process sees the local endpoint."""
    import gzip
    import os
    import subprocess
    import sys

    records = json.loads(both[0].read_text())
    hub.add_hub_file("org/gz", "data/train.jsonl.gz", gzip.compress("\n".join(map(json.dumps, records)).encode()))
    env = dict(os.environ, HF_DATASETS_CACHE=str(tmp_path / "ds_cache"))
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    code = ("import json; from llava15.data.formats import read_records; "
            "print(json.dumps([r for _, r in read_records('hf://org/gz')]))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [record_to_conversation(r, i) for i, r in enumerate(got)] == \
        [record_to_conversation(r, i) for i, r in enumerate(records)]
