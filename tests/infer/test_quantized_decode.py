"""Quantized decoding (`llava15.load(path, quantize=...)`): weight-only LLM layers, same tokens as full
precision on a fixed prompt set, smaller weights, vision tower / projector / lm_head untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import llava15
from llava15.infer.decoding import DecodingParams
from llava15.model.quantize import WeightOnlyLinear, linear_bytes

PROMPTS = ["<image>\nWhat is this?", "Hello there, how are you doing today?", "<image>\nDescribe the picture.",
           "Hi", "<image>\nWhat colour is the square?", "Tell me a story about a cat.",
           "<image>\nIs there a circle in the image?", "Name three fruits."]
COLOURS = [(200, 10, 10), (10, 200, 30), (0, 90, 200), (230, 220, 40)]
NEW_TOKENS = 16
MIN_AGREEMENT = 0.95


def _images(i: int, prompt: str) -> list[Image.Image]:
    return [Image.new("RGB", (40 + 8 * i, 32), COLOURS[i % 4])] if "<image>" in prompt else []


def greedy_agreement(reference, candidate) -> tuple[float, int]:
    """Share of positions where `candidate`'s greedy token equals the reference's, with the reference's
    greedy continuation as the context of both (teacher forcing: one early difference does not shift
    every later position)."""
    engine = reference.engine
    agree = total = 0
    for i, prompt in enumerate(PROMPTS):
        row = engine.prepare(prompt, _images(i, prompt))
        events = [ev for step in engine.run([row], [DecodingParams(max_new_tokens=NEW_TOKENS, ignore_eos=True)])
                  for ev in step if ev.finished]
        new = events[0].token_ids
        ids = torch.tensor([row.ids + new])
        pix = None if row.pixel_values is None else row.pixel_values
        argmax = []
        for bundle in (reference, candidate):
            with torch.inference_mode():
                logits = bundle.model(input_ids=ids, pixel_values=pix).logits[0]
            argmax.append(logits[len(row.ids) - 1:-1].argmax(-1))
        assert argmax[0].tolist() == new, "the reference's forward must give its own greedy tokens"
        agree += int((argmax[0] == argmax[1]).sum())
        total += len(new)
    return agree / total, total


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """A tiny model decodes fastest on one thread, and the int8 kernel's parallel region stalls on a loaded
    2-core machine (each step waits for a time slice)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def full(tiny_llava_dir: Path):
    return llava15.load(str(tiny_llava_dir), device="cpu")


@pytest.mark.parametrize("method", ["int8", "fp8", "nf4"])
def test_quantized_greedy_tokens_agree_with_full_precision(full, tiny_llava_dir: Path, method: str) -> None:
    quant = llava15.load(str(tiny_llava_dir), device="cpu", quantize=method)
    share, n = greedy_agreement(full, quant)
    print(f"{method}: greedy tokens agree with full precision on {100 * share:.1f}% of {n} positions")
    # the acceptance bar is int8's; fp8 (3 mantissa bits) and nf4 (4 bits) trade more accuracy for memory
    bar = {"int8": MIN_AGREEMENT, "fp8": 0.9, "nf4": 0.6}[method]
    assert share >= bar, f"{method}: {100 * share:.1f}% of {n} positions agree"
    stored, fp32 = linear_bytes(quant.model)
    assert stored <= {"int8": 0.3, "fp8": 0.3, "nf4": 0.2}[method] * fp32
    # generation through the public API works and the untouched parts are untouched
    assert isinstance(quant.generate(["Hi"], max_new_tokens=4, temperature=0)[0], str)
    assert type(quant.model.lm_head) is torch.nn.Linear
    assert type(quant.model.model.multi_modal_projector.linear_1) is torch.nn.Linear
    for a, b in zip(full.model.model.vision_tower.parameters(), quant.model.model.vision_tower.parameters()):
        assert torch.equal(a, b)


def test_gpu_int8_formula_agrees_too(full, tiny_llava_dir: Path) -> None:
    """The int8 layers without the CPU kernel: the formula CUDA compiles, checked on CPU."""
    quant = llava15.load(str(tiny_llava_dir), device="cpu", quantize="int8")
    layers = [m for m in quant.model.modules() if isinstance(m, WeightOnlyLinear)]
    assert layers
    for layer in layers:
        layer.cpu_kernel = False
    share, n = greedy_agreement(full, quant)
    print(f"int8 (CUDA's formula): greedy tokens agree on {100 * share:.1f}% of {n} positions")
    assert share >= MIN_AGREEMENT


def test_weight_only_int8_layer_is_per_channel_exact_to_half_a_step() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    q = WeightOnlyLinear(lin, torch.int8)
    assert q.weight.dtype == torch.int8 and q.scale.shape == (32,)
    step = lin.weight.abs().amax(1, keepdim=True) / 127
    assert ((q.dequantized() - lin.weight).abs() <= step / 2 + 1e-7).all()
    x = torch.randn(3, 64)
    exact = torch.nn.functional.linear(x, q.dequantized(), lin.bias)
    torch.testing.assert_close(q(x), exact, rtol=0.02, atol=0.02)  # CPU kernel: bf16 activations
    q.cpu_kernel = False
    torch.testing.assert_close(q(x), exact)


def test_unknown_quantization_is_a_clear_error(tiny_llava_dir: Path) -> None:
    with pytest.raises(ValueError, match="int8, fp8, nf4"):
        llava15.load(str(tiny_llava_dir), device="cpu", quantize="int3")
