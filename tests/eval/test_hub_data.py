"""The lmms-lab datasets as users download them: a tiny model gives the same answers files and scores
from a local parquet snapshot as from the official layout holding the same questions; every benchmark's
Hub reader builds the official prompt; ``eval run`` checks the data before loading any model;
``eval data`` verifies a snapshot (the download itself needs the Hub, absent here: only the
verification of a pre-filled snapshot is exercised)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llava15.cli import main
from llava15.eval.benchmarks import get_benchmark
from tests.eval.hub_snapshots import png, write_snapshot

SUFFIX = "\nAnswer the question using a single word or phrase."
LETTER = "\nAnswer with the option's letter from the given choices directly."
POPE_Q = [("adversarial", 0, "cat", "yes"), ("adversarial", 0, "dog", "no"), ("popular", 1, "car", "yes"),
          ("popular", 1, "cup", "no"), ("random", 2, "boat", "no"), ("random", 2, "bird", "yes")]  # fmt: skip
MME_Q = [("existence", "existence/1.png", "Is there a red square?", "Yes"),
         ("existence", "existence/1.png", "Is there a blue square?", "No"),
         ("artwork", "artwork/images/7.jpg", "Is this by Monet?", "Yes"),
         ("artwork", "artwork/images/7.jpg", "Is this by Dali? ", "No")]  # the two-space MME variant
MME_SUFFIX = " Please answer yes or no."


def _jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _images() -> list[bytes]:
    return [png((40 * i, 90, 200 - 30 * i), (20 + 6 * i, 14))["bytes"] for i in range(3)]


def official_root(root: Path) -> Path:
    ev = root / "playground" / "data" / "eval"
    images = _images()
    qs, labels = [], {}
    for n, (split, img, obj, label) in enumerate(POPE_Q):
        name = f"COCO_val2014_{img:012d}.jpg"
        (ev / "pope" / "val2014").mkdir(parents=True, exist_ok=True)
        (ev / "pope" / "val2014" / name).write_bytes(images[img])
        qs.append({"question_id": n + 1, "image": name, "text": f"Is there a {obj} in the image?" + SUFFIX,
                   "category": split})  # fmt: skip
        labels.setdefault(split, []).append({"question_id": len(labels.get(split, [])) + 1, "label": label})
    _jsonl(ev / "pope" / "llava_pope_test.jsonl", qs)
    for split, rows in labels.items():
        _jsonl(ev / "pope" / "coco" / f"coco_pope_{split}.json", rows)
    bench = ev / "MME" / "MME_Benchmark_release_version"
    mme, qa = [], {}
    for k, (sub, rel, question, answer) in enumerate(MME_Q):
        (bench / rel).parent.mkdir(parents=True, exist_ok=True)
        (bench / rel).write_bytes(images[k // 2])
        qa_dir = bench / sub / "questions_answers_YN" if "/images/" in rel else bench / sub
        qa.setdefault(qa_dir / (Path(rel).stem + ".txt"), []).append(f"{question}{MME_SUFFIX}\t{answer}\n")
        mme.append({"question_id": rel, "image": rel, "text": question + SUFFIX, "category": sub})
    for path, lines in qa.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(lines))
    _jsonl(ev / "MME" / "llava_mme.jsonl", mme)
    return root


def hub_root(root: Path) -> Path:
    images = _images()
    write_snapshot(root, "lmms-lab/POPE", "test", [
        {"id": str(n), "question_id": str(n + 1), "question": f"Is there a {obj} in the image?", "answer": label,
         "image_source": f"COCO_val2014_{img:012d}", "image": {"bytes": images[img], "path": None}, "category": split}
        for n, (split, img, obj, label) in enumerate(POPE_Q)])  # fmt: skip
    write_snapshot(root, "lmms-lab/MME", "test", [
        {"question_id": rel, "image": {"bytes": images[k // 2], "path": None}, "question": question + MME_SUFFIX,
         "answer": answer, "category": sub} for k, (sub, rel, question, answer) in enumerate(MME_Q)])  # fmt: skip
    return root


def test_both_sources_give_the_same_questions(tmp_path):
    official, hub = official_root(tmp_path / "official"), hub_root(tmp_path / "hub")
    for name in ("pope", "mme"):
        bench = get_benchmark(name)
        a, b = bench.load(official), bench.load(hub)
        assert bench.locate(official).kind == "official" and bench.locate(hub).kind == "hub"
        assert [(q.id, q.prompt_text, q.extra["record_prompt"]) for q in a] == \
               [(q.id, q.prompt_text, q.extra["record_prompt"]) for q in b]  # fmt: skip
        assert [bench.open_image(q).tobytes() for q in a] == [bench.open_image(q).tobytes() for q in b]


def test_tiny_model_gives_identical_answers_and_scores_from_both_sources(tiny_llava_dir, tmp_path):
    roots = {"official": official_root(tmp_path / "official"), "hub": hub_root(tmp_path / "hub")}
    outs = {}
    for kind, root in roots.items():
        outs[kind] = tmp_path / f"out-{kind}"
        assert main(["eval", "run", "--model", str(tiny_llava_dir), "--benchmarks", "pope,mme", "--data-root",
                     str(root), "--out", str(outs[kind]), "--batch-size", "4", "--device", "cpu",
                     "--max-new-tokens", "6"]) == 0  # fmt: skip
    for name in ("pope", "mme"):
        answers = [(outs[k] / name / "answers.jsonl").read_text() for k in outs]
        assert answers[0] == answers[1] and len(answers[0].splitlines()) == {"pope": 6, "mme": 4}[name]
        scores = [json.loads((outs[k] / name / "scores.json").read_text()) for k in outs]
        for key in ("status", "value", "metrics", "ci95", "bootstrap"):
            assert scores[0][key] == scores[1][key], key
        assert scores[0]["data"].startswith("official layout") and "lmms-lab/" in scores[1]["data"]
    assert len(json.loads((outs["hub"] / "pope" / "scores.json").read_text())["metrics"]["splits"]) == 3


def test_run_fails_before_loading_the_model_naming_missing_files_and_keeps_finished_ones(tiny_llava_dir, tmp_path):
    root = official_root(tmp_path / "data")
    out = tmp_path / "out"
    # a previous run of this --out finished POPE
    answers = [{"question_id": n + 1, "prompt": "p", "text": "Yes"} for n in range(len(POPE_Q))]
    _jsonl(out / "pope" / "answers.jsonl", answers)
    # a real checkpoint: the data check must stop the run before it is loaded
    cmd = [sys.executable, "-m", "llava15.cli", "eval", "run", "--model", str(tiny_llava_dir),
           "--benchmarks", "pope,gqa", "--data-root", str(root), "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: data check failed, no model loaded")
    assert "gqa: missing" in lines[0] and "gqa/llava_gqa_testdev_balanced.jsonl" in lines[0]
    assert "gqa/data/images" in lines[0] and "lmms-lab/GQA" in lines[0] and "--question-file gqa=PATH" in lines[0]
    assert "pope" not in lines[0].split("(finished")[0]  # POPE's data is complete
    kept = json.loads((out / "pope" / "scores.json").read_text())
    assert kept["status"] == "scored" and kept["value"] == pytest.approx(100 * 2 * (0.5 * 1) / 1.5)
    assert not (out / "run.json").exists()  # nothing was started


def test_eval_data_verifies_a_prefilled_snapshot(tmp_path, capsys):
    image = png()
    pope = [{"id": str(i), "question_id": str(i + 1), "question": "Is there a cat in the image?", "answer": "yes",
             "image_source": "x", "image": image, "category": "random"} for i in range(9000)]  # fmt: skip
    write_snapshot(tmp_path, "lmms-lab/POPE", "test", pope, shards=2)
    mme = [{"question_id": f"color/{i // 2}.png", "image": image, "question": "Q? Please answer yes or no.",
            "answer": "Yes", "category": "color"} for i in range(2374)]  # fmt: skip
    write_snapshot(tmp_path, "lmms-lab/MME", "test", mme)
    args = ["eval", "data", "--benchmarks", "pope,mme", "--out", str(tmp_path), "--verify-only"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "pope: ok, lmms-lab/POPE split test: 9000 of 9000 rows in 2 file(s)" in out
    assert "mme: ok, lmms-lab/MME split test: 2374 of 2374 rows" in out

    (tmp_path / "lmms-lab/POPE/data/test-00001-of-00002.parquet").unlink()  # an interrupted download
    mme_file = next((tmp_path / "lmms-lab/MME/data").glob("*.parquet"))
    mme_file.write_bytes(b"PAR1 torn")
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "pope: lmms-lab/POPE split test: 4500 rows, expected 9000" in out
    assert f"mme: {mme_file}: not a readable parquet file" in out


# --------------------------------------------------------------------------------- every Hub reader


def _read(bench: str, root: Path):
    b = get_benchmark(bench)
    assert b.locate(root).kind == "hub"
    return b, b.load(root)


def test_hub_readers_build_the_official_prompts(tmp_path):
    img = png()
    write_snapshot(tmp_path, "lmms-lab/GQA", "testdev", [
        {"id": "201", "imageId": "n1", "question": "Is it red?", "answer": "yes", "fullAnswer": "Yes.",
         "isBalanced": True}], config="testdev_balanced_instructions")  # fmt: skip
    write_snapshot(tmp_path, "lmms-lab/GQA", "testdev", [{"id": "n1", "image": img}],
                   config="testdev_balanced_images", features_key="lmms-lab/GQA#images")
    b, qs = _read("gqa", tmp_path)
    assert (qs[0].id, qs[0].prompt_text) == ("201", "<image>\nIs it red?" + SUFFIX)
    assert b.open_image(qs[0]).mode == "RGB"
    assert b.score([{"question_id": "201", "text": "Yes."}], tmp_path, None)["value"] == 100.0

    ans = [{"answer": "two", "answer_confidence": "yes", "answer_id": i} for i in range(10)]
    write_snapshot(tmp_path, "lmms-lab/VQAv2", "testdev", [
        {"question_type": "how many", "multiple_choice_answer": "2", "answers": [], "image_id": 9,
         "answer_type": "number", "question_id": 9001, "question": "How many?", "image": img}])  # fmt: skip
    b, qs = _read("vqav2", tmp_path)
    assert (qs[0].id, qs[0].prompt_text) == (9001, "<image>\nHow many?" + SUFFIX)
    res = b.score([{"question_id": 9001, "text": "Two."}], tmp_path, tmp_path / "out")
    assert res["status"] == "submission" and ans  # test-dev: no answers on the Hub, the server scores it
    assert json.loads(Path(res["files"]["submission"]).read_text()) == [{"question_id": 9001, "answer": "2"}]

    write_snapshot(tmp_path, "lmms-lab/VizWiz-VQA", "test", [
        {"question_id": "VizWiz_test_00000000", "image": img, "question": "what is this?", "answers": [],
         "category": ""}])  # fmt: skip
    b, qs = _read("vizwiz", tmp_path)
    assert qs[0].prompt_text == ("<image>\nwhat is this?\nWhen the provided information is insufficient, respond "
                                 "with 'Unanswerable'." + SUFFIX)  # fmt: skip
    res = b.score([{"question_id": "VizWiz_test_00000000", "text": "A Cup."}], tmp_path, tmp_path / "out")
    assert json.loads(Path(res["files"]["submission"]).read_text()) == [
        {"image": "VizWiz_test_00000000.jpg", "answer": "cup"}]

    write_snapshot(tmp_path, "lmms-lab/ScienceQA", "test", [
        {"image": png(mode="P"), "question": "Which is red?", "choices": ["rose", "sky"], "answer": 0,
         "hint": "Look.", "task": "", "grade": "", "subject": "", "topic": "", "category": "", "skill": "",
         "lecture": "", "solution": ""}], config="ScienceQA-IMG")  # fmt: skip
    b, qs = _read("scienceqa", tmp_path)
    assert qs[0].prompt_text == "<image>\nContext: Look.\nWhich is red?\nA. rose\nB. sky" + LETTER
    assert b.open_image(qs[0]).mode == "P"  # as stored: padded before RGB under the official protocol
    assert b.score([{"question_id": "0", "prompt": qs[0].prompt_text, "text": "A"}], tmp_path, None)["value"] == 100

    write_snapshot(tmp_path, "lmms-lab/textvqa", "validation", [
        {"image_id": "abc", "question_id": 1, "question": "what brand?", "question_tokens": [], "image": img,
         "image_width": 12, "image_height": 8, "flickr_original_url": "", "flickr_300k_url": "",
         "answers": ["dakota"] * 10, "image_classes": [], "set_name": "val", "ocr_tokens": ["DAKOTA", "Pire"]}])  # fmt: skip
    b, qs = _read("textvqa", tmp_path)
    assert (qs[0].id, qs[0].prompt_text) == ("abc", "<image>\nWhat brand?\nReference OCR token: DAKOTA, Pire" + SUFFIX)
    rec = b.answer_record(qs[0], "Dakota", "m")
    assert b.score([rec], tmp_path, None)["value"] == 100.0

    write_snapshot(tmp_path, "lmms-lab/MMBench_EN", "dev", [
        {"index": i, "question": "Colour?", "hint": None, "A": a, "B": bb, "C": None, "D": None, "answer": ans_,
         "category": "c", "image": img, "source": "", "l2-category": "", "comment": "", "split": "dev"}
        for i, a, bb, ans_ in ((3, "red", "blue", "A"), (1_000_003, "blue", "red", "B"))])  # fmt: skip
    b, qs = _read("mmbench", tmp_path)
    assert qs[1].id == 1_000_003 and qs[1].prompt_text == "<image>\nColour?\nA. blue\nB. red" + LETTER
    assert b.score([{"question_id": 3, "text": "A"}, {"question_id": 1_000_003, "text": "B"}], tmp_path, None)["value"] == 100

    write_snapshot(tmp_path, "lmms-lab/SEED-Bench", "test", [
        {"answer": "B", "choice_a": "x", "choice_b": "y", "choice_c": "z", "choice_d": "w", "data_id": "1.jpg",
         "data_type": "image", "question": "Which?", "question_id": "q1", "question_type_id": 1, "image": [img],
         "segment": None},
        {"answer": "A", "choice_a": "x", "choice_b": "y", "choice_c": "z", "choice_d": "w", "data_id": "v.mp4",
         "data_type": "video", "question": "What next?", "question_id": "q2", "question_type_id": 10,
         "image": [png((1, 1, 1)), png((2, 2, 2)), png((3, 3, 3))], "segment": None}])  # fmt: skip
    b, qs = _read("seed", tmp_path)
    assert qs[0].prompt_text == "<image>\nWhich?\nA. x\nB. y\nC. z\nD. w" + LETTER
    assert b.open_image(qs[1]).getpixel((0, 0)) == (2, 2, 2)  # the middle frame
    res = b.score([{"question_id": "q1", "text": "B"}], tmp_path, None)
    assert res["scope"] == "img" and res["value"] == 100.0 and not res["comparable"]

    write_snapshot(tmp_path, "lmms-lab/llava-bench-in-the-wild", "train", [
        {"question_id": 0, "question": "Describe it.", "image": img, "caption": "A cup.", "gpt_answer": "A cup.",
         "category": "detail", "image_id": "001"}])  # fmt: skip
    b, qs = _read("llava_bench", tmp_path)
    assert (qs[0].id, qs[0].prompt_text, qs[0].max_new_tokens) == (0, "<image>\nDescribe it.", 1024)

    write_snapshot(tmp_path, "lmms-lab/MMVet", "test", [
        {"question_id": "v1_12", "image": img, "question": "What is x?", "answer": "1<OR>one",
         "image_source": "", "capability": "math,ocr"}])  # fmt: skip
    b, qs = _read("mmvet", tmp_path)
    assert (qs[0].id, qs[0].prompt_text) == (12, "<image>\nWhat is x?")
    res = b.score([{"question_id": 12, "text": "1"}], tmp_path, tmp_path / "out")
    assert json.loads(Path(res["files"]["submission"]).read_text()) == {"v1_12": "1"}
