"""Every metric's edge cases, written from eval.md §3-4 (the official scorers' behaviour)."""

from __future__ import annotations

import math

import pytest

from llava15.eval import metrics as M

TEN_YES = ["yes"] * 10


# ----------------------------------------------------------------------------- VQA accuracy


@pytest.mark.parametrize(("k", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_accuracy_depends_only_on_matching_humans(k, expected):
    answers = ["cat"] * k + ["dog"] * (10 - k)
    assert M.vqa_accuracy("cat", answers) == pytest.approx(expected)
    assert M.vqaeval_accuracy("cat", answers) == pytest.approx(expected)


def test_m4c_normalises_both_sides():
    assert M.vqa_accuracy("Yes.", TEN_YES) == 1.0
    assert M.vqa_accuracy("Two", ["2"] * 10) == 1.0
    assert M.vqa_accuracy("1,000", ["1000"] * 3 + ["x"] * 7) == pytest.approx(0.9)


def test_vqaeval_does_not_normalise_unanimous_answers():
    assert M.vqaeval_accuracy("Yes", TEN_YES) == 0.0
    assert M.vqaeval_accuracy("two", ["2"] * 10) == 0.0
    assert M.vqaeval_accuracy("yes", TEN_YES) == 1.0
    assert M.vqaeval_accuracy(" yes\n", TEN_YES) == 1.0  # whitespace cleaning still happens
    # ...but normalises as soon as the humans disagree
    assert M.vqaeval_accuracy("Two", ["2"] * 9 + ["3"]) == 1.0


def test_server_path_keeps_the_apostrophe_s_quirk():
    # EvalAIAnswerProcessor turns 's into " 's" before the upload, so the server never matches.
    assert M.vqa_server_accuracy("McDonald's", ["mcdonald's"] * 9 + ["x"]) == 0.0
    assert M.vqa_server_accuracy("Yes", TEN_YES) == 1.0


def test_vizwiz_unanswerable_is_normalised_before_the_server():
    gts = ["unanswerable"] * 10
    assert M.vizwiz_accuracy("Unanswerable.", gts) == 1.0
    assert M.vizwiz_accuracy("Unsuitable", ["unsuitable"] * 3 + ["unanswerable"] * 7) == pytest.approx(0.9)


def test_empty_prediction_and_empty_answers():
    assert M.vqa_accuracy("", TEN_YES) == 0.0
    assert M.vqa_accuracy("A", [""] * 10) == 1.0  # "A" normalises to "" (article dropped)
    with pytest.raises(ValueError):
        M.vqa_accuracy("yes", [])


# ------------------------------------------------------------------------------- GQA / SEED


def test_gqa_exact_match_after_rstrip_and_lower():
    assert M.gqa_match("Yes.", "yes")
    assert M.gqa_match("Left...", "left")
    assert not M.gqa_match("the left", "left")
    assert not M.gqa_match(" left", "left")
    assert not M.gqa_match("", "left")


def test_seed_letter_must_match_exactly():
    assert M.seed_match("A", "A")
    assert not M.seed_match("A.", "A")
    assert not M.seed_match("a", "A")
    assert not M.seed_match(None, "A")
    assert not M.seed_match("", "A")


# -------------------------------------------------------------------------------- ScienceQA


@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        ("B", 3, 1),
        ("E", 5, 4),
        ("E", 4, -1),  # letter beyond the choices
        ("B. cat", 3, 1),
        ("B.cat", 3, -1),
        ("b", 3, -1),
        ("B.", 3, -1),
        ("(B)", 3, -1),
        (" B", 3, -1),
        ("The answer is B.", 3, 1),
        ("The answer is B", 3, -1),  # the pattern needs one more character after the letter
        ("The answer is Bx", 3, 1),
        ("The answer is A. The answer is B.", 3, -1),  # two matches
        ("The answer is F.", 3, -1),
        ("", 3, -1),
        ("FAILED", 3, -1),
    ],
)
def test_scienceqa_parse(text, n, expected):
    assert M.scienceqa_parse(text, n) == expected


def test_scienceqa_img_subset_drops_missing_predictions():
    rows = [("A", 0, 2, True), (None, 0, 2, True), ("B", 0, 2, False), ("A", 0, 2, False)]
    s = M.scienceqa_scores(rows)
    assert (s["total"], s["correct"], s["img_total"], s["img_correct"]) == (4, 2, 1, 1)
    assert s["accuracy"] == 50.0 and s["img_accuracy"] == 100.0


# ------------------------------------------------------------------------------------- POPE


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("Yes", "yes"), ("No", "no"), ("no", "no"), ("", "yes"), ("NO", "yes"), ("Not", "yes"),
        ("Nope", "yes"), ("no!", "yes"), ("Definitely not!", "yes"), ("no\nthere is none", "yes"),
        ("yes and no", "no"), ("There's no dog", "no"), ("No dog. Yes cats.", "no"), ("Yes. No.", "yes"),
        ("No, there is not.", "no"), ("no,", "no"), ("It is not.", "no"),
    ],
)  # fmt: skip
def test_pope_parse(text, parsed):
    assert M.pope_parse(text) == parsed


def test_pope_scores_counts_and_ratios():
    s = M.pope_scores(["Yes", "No", "Yes", "No", ""], ["yes", "no", "no", "yes", "yes"])
    assert (s["TP"], s["FP"], s["TN"], s["FN"]) == (2, 1, 1, 1)
    assert s["accuracy"] == pytest.approx(0.6)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    assert s["yes_ratio"] == pytest.approx(0.6)  # from the predictions, not the labels


def test_pope_label_other_than_no_is_positive_and_no_positives_gives_zero():
    s = M.pope_scores(["No", "No"], ["maybe", "no"])
    assert s["FN"] == 1 and s["precision"] == 0.0 and s["f1"] == 0.0


def test_pope_misaligned_lengths_raise():
    with pytest.raises(ValueError, match="paired by position"):
        M.pope_scores(["Yes"], ["yes", "no"])


# -------------------------------------------------------------------------------------- MME


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("Yes", "yes"), ("no", "no"), ("y", "other"), ("none", "no"), ("nope", "no"), ("know", "no"),
        ("not really", "no"), (" yes", "yes"), ("Yes, it is", "yes"), ("The answer is yes", "other"),
        ("", "other"), ("N", "other"), ("abno", "no"),
    ],
)  # fmt: skip
def test_mme_parse(text, parsed):
    assert M.mme_parse(text) == parsed


def test_mme_scores_acc_plus_needs_both_answers_of_an_image():
    subtasks = {
        "existence": [("1.txt", "q", "Yes", "Yes"), ("1.txt", "q", "No", "No"),
                      ("2.txt", "q", "Yes", "Yes"), ("2.txt", "q", "No", "Yes")],
        "code_reasoning": [("1.txt", "q", "Yes", "y"), ("1.txt", "q", "No", "no")],
    }  # fmt: skip
    s = M.mme_scores(subtasks)
    assert s["subtasks"]["existence"] == {"acc": 0.75, "acc_plus": 0.5, "score": pytest.approx(125.0)}
    assert s["subtasks"]["code_reasoning"]["score"] == pytest.approx(50.0)
    assert s["perception"] == pytest.approx(125.0)
    assert s["cognition"] == pytest.approx(50.0)


def test_mme_odd_number_of_lines_raises():
    with pytest.raises(ValueError, match="pairs"):
        M.mme_scores({"color": [("1.txt", "q", "Yes", "Yes")]})


# ---------------------------------------------------------------------------------- MMBench

CHOICES = {"A": "red", "B": "green", "C": "blue", "D": "yellow"}


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"), ("B.", "B"), ("(C)", "C"), ("Answer: D", "D"), ("The answer is (A)", "A"),
        ("B is right one here", None),  # letter not among the last 4 tokens, no text match
        ("A B", None),  # two letters
        ("Cannot determine the answer", "Z"),
        ("Z", "Z"),
        ("the colour is green", "B"),  # option text
        ("red or green", None),  # two option texts
        ("", None),
        ("E", None),  # not an option
        ("I think the answer is c because of the sky", "C"),
    ],
)  # fmt: skip
def test_mmbench_extract(text, letter):
    assert M.mmbench_extract(text, dict(CHOICES)) == letter


def test_mmbench_extract_ignores_letters_outside_the_row_options():
    assert M.mmbench_extract("D", {"A": "x", "B": "y"}) is None
    assert M.mmbench_extract("A D", {"A": "x", "B": "y"}) == "A"


def test_mmbench_circular_needs_every_rotation_right():
    def row(index, answer, pred):
        return {"index": index, "A": "red", "B": "green", "C": float("nan"), "D": None, "answer": answer,
                "prediction": pred}  # fmt: skip

    rows = [row(1, "A", "A"), row(1_000_001, "B", "B"), row(2, "B", "B"), row(1_000_002, "A", "B")]
    s = M.mmbench_circular(rows)
    assert s["circular"] == 0.5 and s["vanilla"] == 1.0 and s["n_groups"] == 2


def test_is_missing():
    assert M.is_missing(None) and M.is_missing(math.nan) and M.is_missing("nan") and M.is_missing("None")
    assert M.is_missing("") and not M.is_missing("0") and not M.is_missing("none of these")


# ------------------------------------------------------------------------- LLaVA-Bench / MM-Vet


@pytest.mark.parametrize(
    ("review", "pair"),
    [
        ("8 10\nAssistant 1 ...", [8.0, 10.0]), ("8,10\nx", [8.0, 10.0]), ("8, 10\nx", [-1, -1]),
        ("8.5 7\nx", [8.5, 7.0]), ("Score: 8 10\nx", [-1, -1]), ("8/10 9/10\nx", [-1, -1]),
        ("10 10", [10.0, 10.0]), ("7  8\nx", [-1, -1]), ("", [-1, -1]), ("8\n10", [-1, -1]),
        ("8 10 because", [-1, -1]),
    ],
)  # fmt: skip
def test_llava_bench_parse_score(review, pair):
    assert M.llava_bench_parse_score(review) == pair


def test_llava_bench_relative_score_and_failed_parses_averaged_in():
    reviews = [
        ("llava_bench_conv", [8.0, 6.0]),
        ("llava_bench_conv", [-1.0, -1.0]),
        ("llava_bench_detail", [10, 5]),
    ]
    s = M.llava_bench_summary(reviews)
    # all: ref mean (8-1+10)/3 = 5.667, model (6-1+5)/3 = 3.333 -> 58.8
    assert s["all"] == {"relative_score": 58.8, "gpt4_ref_score_x10": 56.7, "model_score_x10": 33.3}
    assert s["llava_bench_detail"]["relative_score"] == 50.0
    both = M.llava_bench_scores([reviews, [("llava_bench_conv", [10, 10])]])
    assert both["relative_score"] == pytest.approx((58.8 + 100.0) / 2)


def test_mmvet_scores_mean_over_runs_and_capabilities():
    scores = {"v1_0": [1.0, 0.5], "v1_1": [0.0, 0.5], "v1_2": [0.5, 0.5], "v1_3": [0.3, 0.1]}
    caps = {"v1_0": ["rec"], "v1_1": ["rec", "ocr"], "v1_2": ["ocr"], "v1_3": ["math"]}
    s = M.mmvet_scores(scores, caps)
    assert s["runs"] == [45.0, 40.0] and s["total"] == 42.5 and s["std"] == 2.5
    assert s["capabilities"] == {"math": 20.0, "ocr": 37.5, "rec": 50.0}
    with pytest.raises(ValueError, match="judge runs"):
        M.mmvet_scores({"v1_0": [1.0], "v1_1": [1.0, 0.0]})
