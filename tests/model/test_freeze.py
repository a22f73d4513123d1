"""Each stage spec trains exactly the components the LLaVA recipe trains."""

from __future__ import annotations

import pytest

from llava15.model.freeze import apply_freeze, component_of
from llava15.model.load import load_bundle

EXPECTED = {
    "projector": {"multi_modal_projector"},
    "projector+llm": {"multi_modal_projector", "language_model", "lm_head"},
    "all": {"vision_tower", "multi_modal_projector", "language_model", "lm_head"},
}


def _trainable_components(model) -> set[str]:
    return {component_of(n) for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def model(tiny_llava_dir):
    return load_bundle(tiny_llava_dir).model


@pytest.mark.parametrize("spec", sorted(EXPECTED))
def test_spec_sets_trainable_components(model, spec):
    table = apply_freeze(model, spec)
    assert _trainable_components(model) == EXPECTED[spec]
    assert all(p.requires_grad for n, p in model.named_parameters() if component_of(n) in EXPECTED[spec])
    lines = {line.split()[0]: line.split()[1:] for line in table.splitlines()[1:]}
    assert set(lines) >= {"vision_tower", "multi_modal_projector", "language_model", "lm_head", "all"}
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert lines["all"][0] == f"{n_train:,}"


def test_unknown_spec_and_lora_spec_without_adapters_fail(model):
    with pytest.raises(ValueError, match="projector\\+llm"):
        apply_freeze(model, "llm")
    with pytest.raises(ValueError, match="apply_lora"):
        apply_freeze(model, "projector+lora")


def test_linear_projector_trains_only_its_single_linear(tmp_path):
    from llava15.model.build import build_llava
    from llava15.testing import make_tiny_clip, make_tiny_llama

    model, _, _ = build_llava(str(make_tiny_clip(tmp_path / "c")), str(make_tiny_llama(tmp_path / "l")),
                              projector="linear")
    apply_freeze(model, "projector")
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["model.multi_modal_projector.linear_1.bias", "model.multi_modal_projector.linear_1.weight"]
