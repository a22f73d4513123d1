"""The recipe runner end to end on a tiny model: exact resume after SIGKILL, 2-process FSDP2 equals
one process, dry run. One uninterrupted single-process run is the reference for both."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import pytest
import torch

from llava15.config import load_recipe
from llava15.train.run import train
from tests.train.conftest import (
    TINY_RECIPE,
    read_losses,
    read_weights,
    subprocess_env,
    tiny_overrides,
    write_dataset,
)

STEPS = 6
# CPU even on a GPU machine: these runs compare CPU numerics (gloo between 2 processes, compiled vs eager)
RUN = {"train.max_steps": STEPS, "train.global_batch_size": 4, "train.micro_batch_size": 2,
       "train.save_steps": 1, "train.save_total_limit": 2, "train.resume": "auto", "train.seed": 3,
       "train.device": "cpu"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return write_dataset(tmp_path_factory.mktemp("data"), n=6, text_only=2)


@pytest.fixture(scope="module")
def reference(tiny_sources, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    torch.set_num_threads(1)
    train(load_recipe(TINY_RECIPE, tiny_overrides(tiny_sources, data, out, **RUN)))
    return out


def _cli(overrides: list[str], torchrun: int = 0) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(torchrun),
                "--master_port", str(random.randint(20000, 40000))] if torchrun else [sys.executable]
    return [*launcher, "-m", "llava15.cli", "train", str(TINY_RECIPE), *overrides]


def test_killed_run_resumes_as_the_same_run(reference, tiny_sources, data, tmp_path) -> None:
    out = tmp_path / "killed"
    kill_after = random.randint(1, STEPS - 2)
    proc = subprocess.Popen(_cli(tiny_overrides(tiny_sources, data, out, **RUN)), env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= kill_after:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    proc.kill()  # SIGKILL: no cleanup, possibly in the middle of a checkpoint save
    proc.wait()
    assert not (out / "final").exists()

    train(load_recipe(TINY_RECIPE, tiny_overrides(tiny_sources, data, out, **RUN)))  # resume=auto
    ours, ref = read_weights(out / "final"), read_weights(reference / "final")
    assert ours.keys() == ref.keys()
    worst = max((ours[k] - ref[k]).abs().max().item() for k in ref)
    assert worst <= 1e-6, f"killed after step ≥{kill_after} and resumed: max |Δweight| = {worst}"
    assert read_losses(out) == pytest.approx(read_losses(reference), rel=0, abs=1e-7)


def test_two_processes_fsdp_match_one_process(reference, tiny_sources, data, tmp_path) -> None:
    out = tmp_path / "fsdp"
    proc = subprocess.run(_cli(tiny_overrides(tiny_sources, data, out, **RUN), torchrun=2), env=subprocess_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 device(s) × 1 accumulation" in proc.stdout + proc.stderr
    ref, ours = read_losses(reference), read_losses(out)
    assert len(ours) == len(ref) == STEPS
    for step, (a, b) in enumerate(zip(ours, ref), 1):
        assert abs(a - b) <= 1e-4 * abs(b), f"step {step}: 2 processes {a} vs 1 process {b}"
    # the saved model is the same as well (FSDP2 gathers full weights for final/)
    w_ours, w_ref = read_weights(out / "final"), read_weights(reference / "final")
    assert max((w_ours[k] - w_ref[k]).abs().max().item() for k in w_ref) < 1e-4


def assert_same_run_up_to_float_order(out, reference) -> None:
    """Same losses (rel 1e-5) and final weights (1e-5) as the reference run."""
    ref, ours = read_losses(reference), read_losses(out)
    assert len(ours) == len(ref) == STEPS
    assert ours == pytest.approx(ref, rel=1e-5)
    w_ours, w_ref = read_weights(out / "final"), read_weights(reference / "final")
    assert w_ours.keys() == w_ref.keys()
    assert max((w_ours[k] - w_ref[k]).abs().max().item() for k in w_ref) < 1e-5


def test_compiled_layers_train_like_eager_layers(reference, tiny_sources, data, tmp_path, capsys) -> None:
    """`train.compile=true` compiles each decoder layer; the run is the reference run up to float
    reordering (same losses and weights to 1e-5)."""
    out = tmp_path / "compiled"
    torch.set_num_threads(1)
    train(load_recipe(TINY_RECIPE, tiny_overrides(tiny_sources, data, out, **RUN, **{"train.compile": True})))
    printed = capsys.readouterr().out
    assert "decoder layers of the language model compiled" in printed
    assert "attention: llava15_packed_sdpa" in printed
    assert_same_run_up_to_float_order(out, reference)


def test_packed_attention_trains_like_transformers_packing(reference, tiny_sources, data, tmp_path, capsys) -> None:
    """The reference run (sdpa → llava15's packed attention, one row per micro-batch) and a run on
    transformers' own packed-sequence handling (eager attention, block-diagonal mask, rows of
    model_max_length) take the same steps: same losses and weights to 1e-5."""
    out = tmp_path / "eager"
    train(load_recipe(TINY_RECIPE, tiny_overrides(tiny_sources, data, out, **RUN,
                                                  **{"model.attn_implementation": "eager"})))
    assert "llava15_packed_sdpa" not in capsys.readouterr().out
    assert_same_run_up_to_float_order(out, reference)


def test_dry_run_reports_memory_and_projection_and_writes_nothing(tiny_sources, data, tmp_path, capsys) -> None:
    from llava15.cli import main

    out = tmp_path / "dry"
    assert main(["train", str(TINY_RECIPE), *tiny_overrides(tiny_sources, data, out, **RUN), "--dry-run"]) == 0
    text = "".join(capsys.readouterr())
    assert "dry run: 2 steps" in text and "peak memory" in text and f"projected time for {STEPS} steps" in text
    assert not (out / "checkpoints").exists() and not (out / "final").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torchrun_on_one_gpu_trains_in_bf16_and_saves_a_loadable_model(tiny_sources, data, tmp_path) -> None:
    """The GPU path end to end: under torchrun `train.device=auto` takes the GPU; bf16, gradient
    checkpointing; the loss goes down and final/ loads."""
    import llava15

    out = tmp_path / "gpu"
    run = {**RUN, "train.device": "auto", "train.precision": "bf16", "train.gradient_checkpointing": True,
           "train.max_steps": 12, "train.lr": 3e-3}
    proc = subprocess.run(_cli(tiny_overrides(tiny_sources, data, out, **run), torchrun=1), env=subprocess_env(),
                          capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "rank 0 on cuda:0" in log and "precision: bf16" in log, log[-3000:]
    losses = read_losses(out)
    assert len(losses) == 12 and losses[-1] < losses[0], losses
    assert llava15.load(str(out / "final")) is not None
