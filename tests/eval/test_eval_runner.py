"""`llava15 eval run` end to end on a tiny model over small benchmark folders in the official layouts:
answers in the official format, scores and report; run over 2 processes (torchrun's worker
environment) with one of them killed half-way and resumed, giving answers identical to an
uninterrupted single-process run."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from llava15.cli import main
from llava15.eval.runner import question_keys, read_done, shard_bounds

SUFFIX = "\nAnswer the question using a single word or phrase."
BENCHES = "pope,mme"  # 128 new tokens; the 1024-token benchmarks run through a fake generate below


def _img(path: Path, colour, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def make_data_root(root: Path) -> Path:
    ev = root / "playground" / "data" / "eval"
    # POPE: 2 splits x 3 questions (2 images each), label files paired by position
    qs, labels = [], {"adversarial": [], "random": []}
    for i in range(6):
        split = "adversarial" if i < 3 else "random"
        image = f"COCO_val2014_{i // 2:012d}.jpg"
        _img(ev / "pope" / "val2014" / image, (40 * i, 100, 200 - 20 * i))
        qs.append({"question_id": i + 1, "image": image, "text": f"Is there a {['cat', 'dog'][i % 2]} in the image?" + SUFFIX,
                   "category": split})  # fmt: skip
        labels[split].append(
            {"question_id": i + 1, "image": image, "text": "q", "label": ["yes", "no"][i % 2]}
        )
    _jsonl(ev / "pope" / "llava_pope_test.jsonl", qs)
    for split, rows in labels.items():
        _jsonl(ev / "pope" / "coco" / f"coco_pope_{split}.json", rows)
    # MME: one side-by-side subtask and one with images/ + questions_answers_YN/
    bench = ev / "MME" / "MME_Benchmark_release_version"
    mme = []
    for sub, rel, nested in (
        ("existence", "existence/1.png", False),
        ("artwork", "artwork/images/3.jpg", True),
    ):
        _img(bench / rel, (10, 200, 30))
        qa = (bench / sub / "questions_answers_YN" if nested else bench / sub) / (Path(rel).stem + ".txt")
        qa.parent.mkdir(parents=True, exist_ok=True)
        qa.write_text("Is it red? Please answer yes or no.\tYes\nIs it blue?  Please answer yes or no.\tNo\n")
        for q in ("Is it red?", "Is it blue? "):
            mme.append({"question_id": rel, "image": rel, "text": q + SUFFIX, "category": sub})
    _jsonl(ev / "MME" / "llava_mme.jsonl", mme)
    # ScienceQA: an image problem and a text-only one
    sqa = ev / "scienceqa"
    _img(sqa / "images" / "test" / "7" / "image.png", (0, 0, 255))
    recs = [{"id": "7", "image": "7/image.png", "conversations": [
                {"from": "human", "value": "<image>\nContext: A map.\nWhich colour?\nA. red\nB. blue"},
                {"from": "gpt", "value": "B"}]},
            {"id": "9", "conversations": [{"from": "human", "value": "Which is a fruit?\nA. apple\nB. rock\nC. car"},
                                          {"from": "gpt", "value": "A"}]}]  # fmt: skip
    sqa.mkdir(parents=True, exist_ok=True)
    (sqa / "llava_test_CQM-A.json").write_text(json.dumps(recs))
    # MMBench: a base question and its rotated copy, image base64 in the TSV
    buf = io.BytesIO()
    Image.new("RGB", (30, 30), (255, 0, 0)).save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    cols = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"]
    rows = [["3", "Which colour?", "", "red", "blue", "", "", "A", "c", b64],
            ["1000003", "Which colour?", "", "blue", "red", "", "", "B", "c", b64]]  # fmt: skip
    (ev / "mmbench").mkdir(parents=True)
    (ev / "mmbench" / "mmbench_dev_20230712.tsv").write_text(
        "\n".join("\t".join(r) for r in [cols, *rows]) + "\n"
    )
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_data_root(tmp_path_factory.mktemp("runner-data"))


def _args(model, root, out, *extra):
    return ["eval", "run", "--model", str(model), "--benchmarks", BENCHES, "--data-root", str(root),
            "--out", str(out), "--batch-size", "4", "--device", "cpu", *extra]  # fmt: skip


def _answers(out: Path) -> dict[str, str]:
    return {b: (out / b / "answers.jsonl").read_text() for b in BENCHES.split(",")}


@pytest.mark.slow
def test_run_kill_resume_and_two_processes_give_identical_answers(
    tiny_llava_dir, data_root, tmp_path, monkeypatch
):
    model, root = tiny_llava_dir, data_root  # the session's shared tiny checkpoint (tests/conftest.py)
    ref = tmp_path / "ref"
    assert main(_args(model, root, ref)) == 0
    answers = _answers(ref)
    pope = [json.loads(x) for x in answers["pope"].splitlines()]
    assert [a["question_id"] for a in pope] == list(range(1, 7))
    assert set(pope[0]) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert pope[0]["prompt"] == "Is there a cat in the image?" + SUFFIX
    scores = json.loads((ref / "scores.json").read_text())
    assert {k: v["status"] for k, v in scores["results"].items()} == {b: "scored" for b in BENCHES.split(",")}
    assert scores["settings"]["batch_size"] == 4
    assert (ref / "report.md").exists() and (ref / "chart.png").exists()

    # Two processes with the environment torchrun gives each worker (RANK, LOCAL_RANK, WORLD_SIZE), batch
    # size 2. Rank 0 is killed after its first POPE batch; rank 1 finishes its halves. Rank 0 is then
    # resumed (in this process) and merges: the answers equal the uninterrupted single-process run's.
    dist = tmp_path / "dist"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2"}
    args = _args(model, root, dist, "--batch-size", "2")
    procs = [subprocess.Popen([sys.executable, "-m", "llava15.cli", *args], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for r in (0, 1)]  # fmt: skip
    shard = dist / "pope" / "shards" / "answers.rank0of2.jsonl"
    try:
        deadline = time.monotonic() + 240
        while len(read_done(shard)) < 2 and procs[0].poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        procs[0].kill()
        procs[0].wait()
        n_before = sum(
            len(read_done(dist / b / "shards" / "answers.rank0of2.jsonl")) for b in ("pope", "mme")
        )
        assert 2 <= n_before < 5, f"rank 0 should be killed half-way through its 5 answers, had {n_before}"
        with open(shard, "a") as f:
            f.write('{"question_id": 3, "pro')  # a torn line, as from a kill in the middle of a write
        _, err = procs[1].communicate(timeout=300)
        assert procs[1].returncode == 0, err[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    assert main(args) == 0
    assert len(read_done(dist / "pope" / "shards" / "answers.rank1of2.jsonl")) == 3
    assert _answers(dist) == answers


def test_answer_shard_images_text_only_and_resume(data_root, tmp_path):
    """The batching loop with a stand-in generate function: images opened once per batch and shared,
    text-only questions get no image, base64 images decoded, appended answers resume."""
    from llava15.eval.benchmarks import get_benchmark
    from llava15.eval.runner import answer_shard

    root = data_root
    calls = []

    def fake_generate(batch, images, batch_size):
        calls.append((batch, images))
        return [f" answer {q.id} " for q in batch]

    pope = get_benchmark("pope")
    qs = pope.load(root)
    path = tmp_path / "pope.jsonl"
    assert answer_shard(pope, qs[:4], path, fake_generate, 4, "m", log=lambda s: None) == 4
    batch, images = calls[0]
    assert images[0][0] is images[1][0] and images[0][0] is not images[2][0]  # one object per image
    assert [json.loads(x)["text"] for x in path.read_text().splitlines()] == [
        f"answer {i}" for i in (1, 2, 3, 4)
    ]
    assert answer_shard(pope, qs, path, fake_generate, 4, "m", log=lambda s: None) == 2  # only the rest
    assert [len(b) for b, _ in calls] == [4, 2]

    sqa = get_benchmark("scienceqa")
    answer_shard(sqa, sqa.load(root), tmp_path / "sqa.jsonl", fake_generate, 8, "m", log=lambda s: None)
    batch, images = calls[-1]
    assert images[0][0].size == (40, 30) and images[1] == [] and batch[1].max_new_tokens == 1024
    mmb = get_benchmark("mmbench")
    answer_shard(mmb, mmb.load(root), tmp_path / "mmb.jsonl", fake_generate, 8, "m", log=lambda s: None)
    assert calls[-1][1][0][0].size == (30, 30)
    rec = json.loads((tmp_path / "mmb.jsonl").read_text().splitlines()[1])
    assert (
        rec["question_id"] == 1000003
        and rec["options"] == ["blue", "red"]
        and rec["text"] == "answer 1000003"
    )


def test_sharding_and_keys():
    assert [shard_bounds(10, r, 3) for r in range(3)] == [(0, 4), (4, 8), (8, 10)]
    assert [shard_bounds(2, r, 4) for r in range(4)] == [(0, 1), (1, 2), (2, 2), (2, 2)]
    assert question_keys([{"question_id": "a"}, {"question_id": "a"}, {"question_id": 1}]) == [
        "a#0",
        "a#1",
        "1#0",
    ]


def test_read_done_keeps_complete_lines_and_repairs_only_when_asked(tmp_path):
    path = tmp_path / "shard.jsonl"
    path.write_text('{"question_id": 1, "text": "a"}\n{"question_id": 2, "text": "b"}')  # 2nd unterminated
    assert [r["question_id"] for r in read_done(path)] == [1]
    assert path.read_text().endswith('"b"}')  # a reader of another rank's shard changes nothing
    assert [r["question_id"] for r in read_done(path, repair=True)] == [1]
    assert path.read_text() == '{"question_id": 1, "text": "a"}\n'
