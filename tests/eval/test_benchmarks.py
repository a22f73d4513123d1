"""Benchmark modules: official question files → the exact prompts of the original eval scripts,
official answer records, submission files and scoring on small official-layout folders."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from llava15.eval.benchmarks import BENCHMARKS, get_benchmark
from llava15.eval.benchmarks.textvqa import question_from_prompt

SUFFIX = "\nAnswer the question using a single word or phrase."
LETTER = "\nAnswer with the option's letter from the given choices directly."


def _jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _official(tmp_path: Path, fixtures: Path, folder: str, name: str) -> Path:
    root = tmp_path / "playground" / "data" / "eval" / folder
    root.mkdir(parents=True)
    (root / name).symlink_to(fixtures / "benchmarks" / "llava_v1_5_eval" / name)
    return tmp_path


def test_registry_is_explicit_and_unknown_names_list_the_known_ones():
    assert list(BENCHMARKS) == ["vqav2", "gqa", "vizwiz", "scienceqa", "textvqa", "pope", "mme", "mmbench",
                                "mmbench_cn", "seed", "llava_bench", "mmvet"]  # fmt: skip
    with pytest.raises(KeyError, match="known: vqav2, gqa"):
        get_benchmark("pope_random")


def test_missing_question_file_names_the_expected_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="pope/llava_pope_test.jsonl"):
        get_benchmark("pope").load(tmp_path)


def test_pope_prompts_from_the_official_question_file(tmp_path, fixtures):
    root = _official(tmp_path, fixtures, "pope", "llava_pope_test.jsonl")
    qs = get_benchmark("pope").load(root)
    assert len(qs) == 8910
    q = qs[0]
    assert q.id == 1 and q.max_new_tokens == 128
    assert q.prompt_text == "<image>\nIs there a snowboard in the image?" + SUFFIX
    assert q.image_path == root / "playground/data/eval/pope/val2014/COCO_val2014_000000310196.jpg"
    rec = get_benchmark("pope").answer_record(q, "Yes", "m")
    assert rec["prompt"] == "Is there a snowboard in the image?" + SUFFIX  # recorded without <image>
    assert set(rec) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}


def test_scienceqa_prompt_and_recorded_prompt(tmp_path, fixtures):
    root = _official(tmp_path, fixtures, "scienceqa", "llava_test_CQM-A.json")
    qs = {q.id: q for q in get_benchmark("scienceqa").load(root)}
    assert len(qs) == 4241 and sum(q.image_path is not None for q in qs.values()) == 2017
    img, txt = qs["5"], qs["512"]
    assert img.prompt_text.startswith("<image>\nContext: People can use") and img.prompt_text.endswith(LETTER)
    assert img.extra["record_prompt"] == img.prompt_text  # model_vqa_science records the whole message
    assert (
        txt.prompt_text
        == "Which closing is correct for a letter?\nA. See you soon,\nJanet\nB. See You Soon,\nJanet" + LETTER
    )
    assert img.max_new_tokens == 1024 and img.image_path.name == "image.png"


def test_scienceqa_official_problem_files_are_used_when_present(tmp_path):
    root = tmp_path / "scienceqa"
    root.mkdir()
    recs = [{"id": "1", "image": "1/image.png", "conversations": [{"from": "human", "value": "<image>\nQ?\nA. x\nB. y"},
                                                                   {"from": "gpt", "value": "B"}]},
            {"id": "2", "conversations": [{"from": "human", "value": "Q2?\nA. x\nB. y\nC. z"}, {"from": "gpt", "value": "A"}]}]  # fmt: skip
    (root / "llava_test_CQM-A.json").write_text(json.dumps(recs))
    (root / "problems.json").write_text(json.dumps({"1": {"choices": ["x", "y"], "answer": 1},
                                                    "2": {"choices": ["x", "y", "z"], "answer": 0}}))  # fmt: skip
    (root / "pid_splits.json").write_text(json.dumps({"test": ["1", "2"]}))
    answers = [
        {"question_id": "1", "prompt": "<image>\nQ?", "text": "B"},
        {"question_id": "2", "prompt": "Q2?", "text": "C"},
    ]
    res = get_benchmark("scienceqa").score(answers, tmp_path, None)
    assert res["metrics"]["accuracy"] == 50.0 and res["value"] == 100.0


def test_textvqa_ocr_prompt_and_question_recovery(tmp_path, fixtures):
    root = _official(tmp_path, fixtures, "textvqa", "llava_textvqa_val_v051_ocr.jsonl")
    qs = get_benchmark("textvqa").load(root)
    assert len(qs) == 5000
    assert qs[0].prompt_text == ("<image>\nWhat is the brand of this camera?\nReference OCR token: DAKOTA, DIGITAL, "
                                 "Single-Use, Camera, Pire, digitat" + SUFFIX)  # fmt: skip
    assert sum(q.prompt_text.count("\nReference OCR token: \n") for q in qs) == 115
    for q in qs:  # the scorer recovers every question from the recorded prompt
        assert (
            question_from_prompt(q.extra["record_prompt"]) == q.extra["record_prompt"].split("\n")[0].lower()
        )


def test_textvqa_scoring_with_annotations(tmp_path):
    root = tmp_path / "textvqa"
    _jsonl(root / "llava_textvqa_val_v051_ocr.jsonl", [
        {"question_id": "img1", "image": "img1.jpg", "text": "What is it?\nReference OCR token: A\n" + SUFFIX[1:]},
        {"question_id": "img1", "image": "img1.jpg", "text": "Who is it?\nReference OCR token: \n" + SUFFIX[1:]}])  # fmt: skip
    ann = {"data": [{"image_id": "img1", "question": "what is it?", "answers": ["stop"] * 10},
                    {"image_id": "img1", "question": "Who is it?", "answers": ["bob"] * 2 + ["x"] * 8}]}  # fmt: skip
    (root / "TextVQA_0.5.1_val.json").write_text(json.dumps(ann))
    # answers without a recorded prompt (e.g. from vLLM) pair with the question file by occurrence
    res = get_benchmark("textvqa").score([{"question_id": "img1", "text": "Stop."}, {"question_id": "img1", "text": "Bob"}],
                                         tmp_path, None)  # fmt: skip
    assert res["value"] == pytest.approx(100 * (1.0 + 0.6) / 2)


def test_mmvet_and_mme_prompts(tmp_path, fixtures):
    root = _official(tmp_path, fixtures, "mm-vet", "llava-mm-vet.jsonl")
    q = get_benchmark("mmvet").load(root)[0]
    assert q.prompt_text == "<image>\nWhat is x in the equation?" and q.max_new_tokens == 1024
    root = _official(tmp_path / "b", fixtures, "MME", "llava_mme.jsonl")
    qs = get_benchmark("mme").load(root)
    assert len(qs) == 2374 and all(q.prompt_text.endswith(SUFFIX) for q in qs)
    assert (
        qs[0].image_path
        == root / "playground/data/eval/MME/MME_Benchmark_release_version/code_reasoning/0020.png"
    )


def _png_b64() -> str:
    buf = io.BytesIO()
    Image.new("RGBA", (5, 3), (255, 0, 0, 128)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize(("name", "folder", "tsv", "suffix"), [
    ("mmbench", "mmbench", "mmbench_dev_20230712.tsv", LETTER),
    ("mmbench_cn", "mmbench_cn", "mmbench_dev_cn_20231003.tsv", "\n请直接回答选项字母。")])  # fmt: skip
def test_mmbench_prompt_image_answers_and_submission(tmp_path, name, folder, tsv, suffix):
    d = tmp_path / folder
    d.mkdir()
    img = _png_b64()
    cols = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"]
    rows = [["7", "Which colour?", "A red square.", "red", "blue", "green", "", "A", "c", img],
            ["1000007", "Which colour?", "A red square.", "green", "red", "blue", "nan", "B", "c", img],
            ["8", "Why?", "", "x", "y", "", "", "B", "c", img]]  # fmt: skip
    (d / tsv).write_text("\n".join("\t".join(r) for r in [cols, *rows]) + "\n", encoding="utf-8")
    bench = get_benchmark(name)
    qs = bench.load(tmp_path)
    assert qs[0].prompt_text == "<image>\nA red square.\nWhich colour?\nA. red\nB. blue\nC. green" + suffix
    assert qs[2].prompt_text == "<image>\nWhy?\nA. x\nB. y" + suffix
    assert qs[0].max_new_tokens == 1024 and bench.open_image(qs[0]).size == (5, 3)
    rec = bench.answer_record(qs[0], "A", "m")
    assert rec["options"] == ["red", "blue", "green"] and rec["option_char"] == ["A", "B", "C"]
    assert rec["prompt"] == "A red square.\nWhich colour?\nA. red\nB. blue\nC. green" and rec["round_id"] == 0
    res = bench.score([{"question_id": 7, "text": "A"}, {"question_id": 1000007, "text": "B."},
                       {"question_id": 8, "text": "A"}], tmp_path, tmp_path / "out")  # fmt: skip
    assert res["metrics"]["circular"] == 0.5 and res["metrics"]["vanilla"] == 0.5
    with zipfile.ZipFile(res["files"]["submission"]) as z:  # a real xlsx: the server's pandas reads it
        sheet = z.read("xl/worksheets/sheet1.xml").decode()
    assert '<t xml:space="preserve">prediction</t>' in sheet and "hint" not in sheet and "B." in sheet


def test_vqav2_submission_covers_all_test_ids_normalised(tmp_path):
    d = tmp_path / "vqav2"
    rows = [
        {"question_id": i, "image": f"{i}.jpg", "text": "Q?" + SUFFIX, "category": "default"} for i in (1, 2)
    ]
    _jsonl(d / "llava_vqav2_mscoco_test-dev2015.jsonl", rows[:1])
    _jsonl(d / "llava_vqav2_mscoco_test2015.jsonl", rows)
    res = get_benchmark("vqav2").score([{"question_id": 1, "text": "Two dogs."}], tmp_path, tmp_path / "out")
    assert res["status"] == "submission" and res["value"] is None
    upload = json.loads(Path(res["files"]["submission"]).read_text())
    assert upload == [{"question_id": 1, "answer": "2 dogs"}, {"question_id": 2, "answer": ""}]


def test_vizwiz_submission_in_question_order_and_requires_every_answer(tmp_path):
    d = tmp_path / "vizwiz"
    _jsonl(
        d / "llava_test.jsonl",
        [{"question_id": i, "image": f"VizWiz_test_{i:08d}.jpg", "text": "q"} for i in (0, 1)],
    )
    bench = get_benchmark("vizwiz")
    with pytest.raises(ValueError, match="1 questions have no answer"):
        bench.score([{"question_id": 0, "text": "x"}], tmp_path, None)
    res = bench.score(
        [{"question_id": 1, "text": "Unanswerable"}, {"question_id": 0, "text": "Black."}], tmp_path, tmp_path
    )
    assert json.loads(Path(res["files"]["submission"]).read_text()) == [
        {"image": "VizWiz_test_00000000.jpg", "answer": "black"}, {"image": "VizWiz_test_00000001.jpg", "answer": "unanswerable"}]  # fmt: skip
    assert res["metrics"]["unanswerable_ratio"] == 0.5


def test_gqa_scores_with_ground_truth_and_writes_predictions(tmp_path):
    d = tmp_path / "gqa" / "data"
    d.mkdir(parents=True)
    bench = get_benchmark("gqa")
    answers = [{"question_id": "a", "text": "Left."}, {"question_id": "b", "text": "The car"}]
    assert bench.score(answers, tmp_path, tmp_path / "out")["status"] == "submission"
    (d / "testdev_balanced_questions.json").write_text(json.dumps(
        {"a": {"answer": "left", "isBalanced": True}, "b": {"answer": "car", "isBalanced": True},
         "c": {"answer": "no", "isBalanced": True}}))  # fmt: skip
    res = bench.score(answers, tmp_path, tmp_path / "out")
    assert res["value"] == pytest.approx(100 / 3) and "1 questions unanswered" in res["notes"][0]
    preds = json.loads((tmp_path / "out" / "testdev_balanced_predictions.json").read_text())
    assert preds == [{"questionId": "a", "prediction": "left"}, {"questionId": "b", "prediction": "the car"}]


def test_seed_exact_letter_per_type_and_image_only_note(tmp_path):
    d = tmp_path / "seed_bench"
    d.mkdir()
    data = {"question_type": {"Scene Understanding": 1, "Action Recognition": 10},
            "questions": [{"question_id": "1", "answer": "A", "question_type_id": 1, "data_type": "image"},
                          {"question_id": "2", "answer": "B", "question_type_id": 1, "data_type": "image"},
                          {"question_id": "3", "answer": "C", "question_type_id": 10, "data_type": "video"}]}  # fmt: skip
    (d / "SEED-Bench.json").write_text(json.dumps(data))
    res = get_benchmark("seed").score(
        [{"question_id": "1", "text": "A"}, {"question_id": "2", "text": "B."}], tmp_path, None
    )
    m = res["metrics"]
    assert (
        m["accuracy_all"] == pytest.approx(100 / 3)
        and m["accuracy_image"] == 50.0
        and m["accuracy_video"] == 0.0
    )
    assert res["value"] == 50.0 and "image-only" in res["notes"][0]
    assert m["per_type"] == {"Scene Understanding": 50.0, "Action Recognition": 0.0}


def test_judged_benchmarks_without_judge_are_skipped_not_zero(tmp_path):
    for name in ("llava_bench", "mmvet"):
        res = get_benchmark(name).score([{"question_id": 0, "text": "a cat"}], tmp_path, tmp_path / "out")
        assert res["status"] == "skipped" and res["value"] is None
    assert json.loads((tmp_path / "out" / "mmvet_results.json").read_text()) == {"v1_0": "a cat"}


def test_pope_partial_run_pairs_with_the_first_labels_and_extra_answers_raise(tmp_path):
    d = tmp_path / "pope"
    _jsonl(
        d / "llava_pope_test.jsonl",
        [{"question_id": i, "image": "x.jpg", "text": "q", "category": "random"} for i in range(3)],
    )
    _jsonl(
        d / "coco" / "coco_pope_random.json",
        [{"question_id": i, "label": lab} for i, lab in enumerate(["yes", "no", "yes"])],
    )
    bench = get_benchmark("pope")
    res = bench.score([{"question_id": 0, "text": "Yes"}, {"question_id": 1, "text": "No"}], tmp_path, None)
    assert res["value"] == 100.0 and "2 of 3 questions answered" in res["notes"][0]
    _jsonl(d / "coco" / "coco_pope_random.json", [{"question_id": 0, "label": "yes"}])
    with pytest.raises(ValueError, match="coco_pope_random.json: POPE: 2 predictions but 1 labels"):
        bench.score([{"question_id": 0, "text": "Yes"}, {"question_id": 1, "text": "No"}], tmp_path, None)


def test_mmbench_test_split_without_answers_gives_a_submission_only(tmp_path):
    d = tmp_path / "mmbench"
    d.mkdir()
    cols = ["index", "question", "hint", "A", "B", "C", "D", "category", "image"]
    (d / "mmbench_test_en_20231003.tsv").write_text(
        "\t".join(cols) + "\n" + "\t".join(["5", "Q?", "", "a", "b", "", "", "c", ""]) + "\n"
    )
    bench = get_benchmark("mmbench")  # another split than the paper's dev TSV only when named explicitly
    src = bench.locate(tmp_path, question_file=d / "mmbench_test_en_20231003.tsv")
    res = bench.score([{"question_id": 5, "text": "A"}], src, tmp_path / "out")
    assert (
        res["status"] == "submission" and res["value"] is None and Path(res["files"]["submission"]).exists()
    )


def test_vqav2_local_accuracy_when_annotations_exist(tmp_path):
    d = tmp_path / "vqav2"
    rows = [{"question_id": i, "image": f"{i}.jpg", "text": "Q?" + SUFFIX} for i in (1, 2, 3)]
    _jsonl(d / "llava_vqav2_mscoco_test-dev2015.jsonl", rows)
    ann = {"annotations": [
        {"question_id": 1, "answers": [{"answer": "2", "answer_id": j} for j in range(10)]},
        {"question_id": 2, "answers": [{"answer": a, "answer_id": j} for j, a in enumerate(["red"] * 2 + ["blue"] * 8)]},
        {"question_id": 3, "answers": [{"answer": "yes", "answer_id": j} for j in range(10)]}]}  # fmt: skip
    (d / "v2_mscoco_val2014_annotations.json").write_text(json.dumps(ann))
    res = get_benchmark("vqav2").score([{"question_id": 1, "text": "Two"}, {"question_id": 2, "text": "Red."}],
                                       tmp_path, None)  # fmt: skip
    # "Two" is normalised to "2" before the upload; q3 unanswered uploads "" and scores 0
    assert res["status"] == "scored" and res["value"] == pytest.approx(100 * (1.0 + 0.6 + 0.0) / 3)


def test_score_rejects_records_without_question_id_or_text(tmp_path):
    from llava15.eval.score import score_answers

    path = tmp_path / "answers.jsonl"
    path.write_text('{"question_id": 1, "text": "Yes"}\n{"id": 2, "answer": "No"}\n')
    with pytest.raises(ValueError, match=r"answers.jsonl record 1 needs 'question_id' and 'text'"):
        score_answers("pope", [str(path)], tmp_path, None)
