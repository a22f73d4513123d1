"""EvalAI / vqaEval answer normalisation, quirks included (eval.md §4.2)."""

from __future__ import annotations

import pytest

from llava15.eval.metrics import normalize_answer
from llava15.eval.vqa_normalize import CONTRACTIONS, evalai_process, vqaeval_process


@pytest.mark.parametrize(
    ("raw", "m4c", "vqaeval"),
    [
        ("1,000", "1000", "1000"),
        ("3.5", "3.5", "3.5"),
        ("yes.", "yes", "yes"),
        ("red,white", "redwhite", "red white"),
        ("it's", "it 's", "it's"),
        ("a, b", "b", "b"),
        ("A", "", ""),
        ("U.S.A.", "usa", "usa"),
        ("twenty-one", "twenty 1", "twenty 1"),
        ("McDonald's", "mcdonald 's", "mcdonald's"),
        ("", "", ""),
        ("Two", "2", "2"),
        ("none", "0", "0"),
        ("The Dog", "dog", "dog"),
        ("dont", "don't", "don't"),
        ("Im", "im", "im"),  # table keys "Im"/"Ive" never match after lowercasing
        ("somebody'd", "somebodyd", "somebodyd"),  # table bug kept
        ("yes\n", "yes", "yes"),
        ("what?", "what", "what"),
        ("hello (world)", "hello world", "hello world"),
        ("e-mail!", "e mail", "e mail"),
        ("left / right", "left right", "left right"),
    ],
)
def test_normalisation_matches_official_processors(raw, m4c, vqaeval):
    assert evalai_process(raw) == m4c
    assert normalize_answer(raw) == m4c
    if raw != "yes\n":  # vqaEval strips newlines in the evaluator, not in its processors
        assert vqaeval_process(raw) == vqaeval


def test_at_most_32_periods_are_removed():
    text = "." * 40 + "x"
    assert evalai_process(text) == "." * 8 + "x"


def test_period_after_digit_removed_but_decimal_kept():
    assert evalai_process("5.") == "5"
    assert evalai_process("5.5.") == "5.5"


def test_digit_comma_digit_deletes_every_punctuation():
    # vqaEval: a digit-comma-digit anywhere makes all 21 characters deleted rather than spaced.
    assert vqaeval_process("1,000 x-y") == "1000 xy"
    assert vqaeval_process("x-y") == "x y"


def test_contraction_table_has_the_official_120_entries():
    assert len(CONTRACTIONS) == 120
