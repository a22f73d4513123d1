"""Bad records: the dataset yields only good ones and counts the rest; `data check`/`data show` report."""

from __future__ import annotations

import json
from argparse import Namespace

import pytest
import torch
from data_spec import IMAGE_ID, SPEC, need_shared
from PIL import Image

from llava15.data.check import run_check, run_show
from llava15.data.conversation import DataError
from llava15.data.dataset import DatasetIndex, LlavaDataset
from llava15.data.images import ImageSettings
from llava15.data.tokenization import IGNORE_INDEX

BAD = {
    "missing_image": {"image": "nope.png", "conversations": [
        {"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."}]},
    "unreadable_image": {"image": "broken.png", "conversations": [
        {"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."}]},
    "image_count": {"image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\n<image>\nQ?"}, {"from": "gpt", "value": "A."}]},
    "unknown_role": {"conversations": [{"from": "robot", "value": "Q?"}, {"from": "gpt", "value": "A."}]},
    "no_assistant": {"conversations": [{"from": "human", "value": "Q?"}]},
    "empty_text": {"conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": " "}]},
    "too_long": {"image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\n" + "word " * 1600}, {"from": "gpt", "value": "A."}]},
    "path_escape": {"image": "../outside.png", "conversations": [
        {"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."}]},
    "special_token": {"conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A</s>B"}]},
}
GOOD = {
    "good_image": {"image": "a.png", "conversations": [
        {"from": "human", "value": "What is this?\n<image>"}, {"from": "gpt", "value": "A square."}]},
    "good_two_images": {"image": ["a.png", "b.jpg"], "conversations": [
        {"from": "human", "value": "<image> vs <image>: which is red?"}, {"from": "gpt", "value": "The first."}]},
    "good_text": {"conversations": [
        {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
        {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Bye."}]},
}


@pytest.fixture()
def data(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGBA", (30, 20), (255, 0, 0, 128)).save(root / "a.png")
    Image.new("RGB", (20, 40), (0, 0, 255)).save(root / "b.jpg")
    (root / "broken.png").write_bytes(b"not an image at all")
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    records = [{"id": k, **v} for k, v in {**GOOD, **BAD}.items()]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records, indent=1))
    return path, root


def test_dataset_yields_only_good_records(data, vicuna):
    path, root = data
    ds = LlavaDataset(path, vicuna, "vicuna_v1", IMAGE_ID, image_folder=root, num_image_tokens=576,
                      model_max_length=2048, image=ImageSettings(size=28))
    samples = list(ds)
    assert [s["id"] for s in samples] == list(GOOD)
    problems = ds.problems
    assert dict(problems.counts) == {k: 1 for k in BAD}
    assert all(problems.examples[k] == [k] for k in BAD)
    two = samples[1]
    assert two["pixel_values"].shape == (2, 3, 28, 28) and (two["input_ids"] == IMAGE_ID).sum() == 2
    assert samples[2]["pixel_values"] is None and ds.modality_lengths[2] < 0
    assert all((s["labels"] != IGNORE_INDEX).any() for s in samples)
    fresh = LlavaDataset(path, vicuna, "vicuna_v1", IMAGE_ID, image_folder=root, image=ImageSettings(size=28))
    late = [i for i in range(len(fresh)) if fresh.index.record(i)["id"] in ("unreadable_image", "too_long")]
    replaced = fresh[late[0]]  # a bad record found only when loaded is replaced, never returned
    assert replaced["id"] in GOOD and replaced["skipped"][0]["reason"] in ("unreadable_image", "too_long")


def test_fail_policy_raises_with_reason(data):
    path, root = data
    with pytest.raises(DataError, match="nope.png"):
        DatasetIndex.build(path, root, bad_records="fail")


def _args(path, root, **kw):
    need_shared()  # the Vicuna tokenizer fixture
    base = dict(file=str(path), images=str(root), tokenizer=str(SPEC / "fixtures" / "vicuna_tokenizer"),
                template="vicuna_v1", format="json", inference=False, max_problem_fraction=0.0, histogram=None)
    return Namespace(**{**base, **kw})


def test_data_check_reports_each_problem(data, capsys, tmp_path):
    path, root = data
    png = tmp_path / "hist.png"
    assert run_check(_args(path, root, histogram=str(png))) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["records"] == len(GOOD) + len(BAD) and report["good"] == len(GOOD)
    assert {k: v["count"] for k, v in report["problems"].items()} == {k: 1 for k in BAD}
    assert all(len(v["examples"]) == 1 and v["examples"][0].startswith(f"{k} (line ")
               for k, v in report["problems"].items())
    assert set(report["not_checked"]) == set() and "role order" in report["checks"]
    assert "nope.png" in report["problems"]["missing_image"]["message"]
    assert report["modality"] == {"one image": 1, "several images": 1, "text-only": 1}
    assert 0 < report["supervised_fraction"] < 1 and png.stat().st_size > 1000
    assert run_check(_args(path, root, max_problem_fraction=0.8)) == 0


def test_data_show_json_and_inference(data, capsys):
    path, root = data
    assert run_show(_args(path, root, images=None)) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    by_id = {x["id"]: x for x in lines}
    good = by_id["good_image"]
    assert good["prompt"].endswith("USER: <image>\nWhat is this? ASSISTANT: A square.</s>")
    assert good["input_ids"].count(IMAGE_ID) == 1 and len(good["labels"]) == len(good["input_ids"])
    assert "error" in by_id["unknown_role"] and "robot" in by_id["unknown_role"]["error"]
    assert set(by_id["good_text"]) == {"id", "prompt", "input_ids", "labels"}
    run_show(_args(path, root, images=None, inference=True))
    inf = {json.loads(x)["id"]: json.loads(x) for x in capsys.readouterr().out.splitlines()}
    assert inf["good_text"]["prompt"].endswith("USER: Hi ASSISTANT:")
    assert inf["good_text"]["input_ids"][-5:] == [319, 1799, 9047, 13566, 29901]


def test_data_show_text_highlights(data, capsys):
    path, root = data
    run_show(_args(path, root, images=None, format="text"))
    out = capsys.readouterr().out
    assert "⟦A square.</s>⟧" in out.replace("▁", " ") or "⟦ A square.</s>⟧" in out
    assert "REJECTED" in out


def test_jsonl_and_unicode_offsets(tmp_path):
    recs = [{"id": i, "conversations": [{"from": "human", "value": "日本語 " * i + "?"},
                                        {"from": "gpt", "value": "ok"}]} for i in range(1, 5)]
    js, jl = tmp_path / "d.json", tmp_path / "d.jsonl"
    js.write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")
    jl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in recs) + "\n", encoding="utf-8")
    for p in (js, jl):
        ix = DatasetIndex.build(p)
        assert [ix.record(i) for i in range(len(ix))] == recs
        assert ix.modality_lengths.tolist() == [-(i + 2) for i in range(1, 5)]


def test_parquet_records(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"id": "p0", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]}]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "d.parquet"))
    ix = DatasetIndex.build(tmp_path / "d.parquet")
    assert ix.record(0)["id"] == "p0" and ix.modality_lengths.tolist() == [3]
    assert torch.is_tensor(torch.tensor(ix.modality_lengths))


def test_hf_dataset_with_embedded_images(tmp_path, vicuna):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({
        "id": ["e0", "e1"],
        "image": [Image.new("RGB", (20, 10), (9, 9, 9)), Image.new("L", (10, 30), 200)],
        "conversations": [[{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]] * 2,
    }).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "hf"))
    data = LlavaDataset(tmp_path / "hf", vicuna, "vicuna_v1", IMAGE_ID, image=ImageSettings(size=28))
    samples = list(data)
    assert [s["id"] for s in samples] == ["e0", "e1"] and samples[1]["pixel_values"].shape == (1, 3, 28, 28)
    assert data.modality_lengths == [3, 3]


def test_cli_data_show_and_check_processes(data):
    """The console script runs both commands end to end (argument wiring included)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "llava15"
    if not script.exists():
        pytest.skip("the llava15 console script is not installed in this environment")
    path, root = data
    need_shared()  # the Vicuna tokenizer fixture
    tok = str(SPEC / "fixtures" / "vicuna_tokenizer")
    show = subprocess.run([str(script), "data", "show", str(path), "--tokenizer", tok, "--format", "json",
                           "--inference", "--limit", "3"], capture_output=True, text=True, timeout=300)
    assert show.returncode == 0, show.stderr[-2000:]
    lines = [json.loads(x) for x in show.stdout.splitlines()]
    assert [x["id"] for x in lines] == list(GOOD) and lines[0]["prompt"].endswith("What is this? ASSISTANT:")
    check = subprocess.run([str(script), "data", "check", str(path), "--images", str(root)],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 1 and "missing_image" in check.stdout and "7 bad" in check.stdout
