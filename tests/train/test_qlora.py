"""QLoRA on CPU (`model.quantize=nf4` + LoRA): the frozen base is stored in NF4, the loss falls as the
unquantized LoRA run's does, and the saved run (adapter + projector) merges onto the dequantized base
and loads."""

from __future__ import annotations

import json

import pytest
import torch

from llava15.config import load_recipe
from llava15.model.load import load_bundle
from llava15.model.quantize import linear_bytes
from llava15.train.distributed import DistInfo
from llava15.train.run import train
from llava15.train.setup import build_model
from tests.train.conftest import TINY_RECIPE, read_losses, tiny_overrides, write_dataset

pytest.importorskip("bitsandbytes")

STEPS = 150
# Same data, seed and schedule; the base differs by NF4's rounding (relative weight error ~0.09 here).
LOSS_TOLERANCE = 0.05  # |mean of the last 10 losses, QLoRA - LoRA|


def _qlora(sources, data, out, quantize: str, **extra) -> list[str]:
    return tiny_overrides(sources, data, out, **{
        "train.stage": "projector+lora", "lora.enabled": True, "lora.r": 8, "lora.alpha": 16, "lora.dropout": 0.0,
        "train.global_batch_size": 5, "train.micro_batch_size": 5, "train.lr": 1e-2, "train.projector_lr": 2e-3,
        "train.resume": "none", "model.quantize": quantize, **extra})


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return write_dataset(tmp_path_factory.mktemp("data"), n=4, text_only=1)


@pytest.fixture(scope="module")
def runs(tiny_sources, data, tmp_path_factory) -> dict:
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before conftest's one-thread fixture; tiny models want one
    try:
        for q in ("none", "nf4"):
            folder = tmp_path_factory.mktemp(f"run_{q}")
            train(load_recipe(TINY_RECIPE, _qlora(tiny_sources, data, folder, q, **{"train.max_steps": STEPS})))
            out[q] = folder
    finally:
        torch.set_num_threads(threads)
    return out


def test_qlora_loss_falls_like_lora(runs) -> None:
    lora, qlora = read_losses(runs["none"]), read_losses(runs["nf4"])
    assert len(lora) == len(qlora) == STEPS
    end_lora, end_qlora = sum(lora[-10:]) / 10, sum(qlora[-10:]) / 10
    print(f"LoRA {lora[0]:.4f} -> {end_lora:.4f}; QLoRA (nf4) {qlora[0]:.4f} -> {end_qlora:.4f} over {STEPS} steps")
    assert end_qlora < qlora[0] - 0.5, "QLoRA did not learn"
    assert abs(end_qlora - end_lora) <= LOSS_TOLERANCE


def test_frozen_base_is_stored_in_nf4(tiny_sources, data, tmp_path) -> None:
    cfg = load_recipe(TINY_RECIPE, _qlora(tiny_sources, data, tmp_path, "nf4"))
    built = build_model(cfg, DistInfo(0, 1, 0, torch.device("cpu")))
    stored, fp32 = linear_bytes(built.model)
    print(f"LLM linear layers: {stored} bytes stored in NF4 instead of {fp32} in fp32 ({stored / fp32:.3f}x)")
    assert stored < 0.25 * fp32
    lm = built.model.get_base_model().model.language_model
    base = lm.layers[0].self_attn.q_proj.base_layer
    assert type(base).__name__ == "Linear4bit" and base.weight.dtype == torch.uint8
    assert base.weight.quant_state.nested, "double quantization: the block scales are quantized again"
    trainable = {n for n, p in built.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "multi_modal_projector" in n for n in trainable)


def test_saved_qlora_run_merges_onto_the_dequantized_base_and_loads(runs) -> None:
    out = runs["nf4"]
    adapter = out / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "non_lora_trainables.safetensors").is_file()
    merged_meta = json.loads((out / "final" / "llava15.json").read_text())["merged_from"]["quantization"]
    print(f"merge: {merged_meta}")
    assert merged_meta["method"] == "nf4" and 0.01 < merged_meta["relative_weight_error"] < 0.2
    assert merged_meta["max_logit_diff_vs_quantized"] < 1e-3  # the trained model, up to rounding
    assert merged_meta["max_logit_diff_vs_full_precision_base"] > merged_meta["max_logit_diff_vs_quantized"]
    bundle = load_bundle(out / "final")
    assert type(bundle.model.model.language_model.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert isinstance(__import__("llava15").load(str(out / "final"), device="cpu").generate(
        ["Hi"], max_new_tokens=3, temperature=0)[0], str)


def test_quantized_base_refuses_full_finetuning(tiny_sources, data, tmp_path) -> None:
    cfg = load_recipe(TINY_RECIPE, tiny_overrides(tiny_sources, data, tmp_path, **{"model.quantize": "nf4"}))
    with pytest.raises(ValueError, match="model.quantize=nf4.*projector\\+lora"):
        build_model(cfg, DistInfo(0, 1, 0, torch.device("cpu")))


def test_gpu_benchmark_qlora_stage_runs_as_a_cpu_dry_run() -> None:
    import subprocess
    import sys

    from tests.train.conftest import REPO, subprocess_env

    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_train.py"), "--dry-run", "--stages",
                           "stage2_qlora"], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "to nf4" in proc.stdout and "stage2_qlora" in proc.stdout, proc.stdout


def test_dry_run_prints_the_memory_projection_first(tiny_sources, data, tmp_path, capsys) -> None:
    from llava15.cli import main

    args = _qlora(tiny_sources, data, tmp_path / "dry", "nf4", **{"train.max_steps": 4})
    assert main(["train", str(TINY_RECIPE), *args, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "memory projection per GPU" in text and "frozen LLM linears (nf4)" in text and "total" in text
    assert text.index("memory projection") < text.index("quantized 14 linear layers")
