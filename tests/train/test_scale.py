"""Training at the paper's scale, shown on CPU with real `torchrun` (gloo): sharded checkpoints that
resume bit-identically after SIGKILL and on another number of processes with every record seen exactly
once, no rank gathering the model to save it, the same losses on 4 processes as on 1 with
token-balanced micro-batches, and bad data met in a loader worker counted, named and survived."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.train.conftest import (
    TINY_RECIPE,
    read_losses,
    read_weights,
    subprocess_env,
    tiny_overrides,
    write_dataset,
)

N_RECORDS = 24  # 3 optimizer steps of 8: one epoch
RUN = {"train.global_batch_size": 8, "train.micro_batch_size": 2, "train.epochs": 1, "train.save_steps": 1,
       "train.save_total_limit": 3, "train.resume": "auto", "train.seed": 3, "train.device": "cpu",
       "data.balance_tokens": True}


@pytest.fixture(scope="module")
def mid_sources(tmp_path_factory) -> dict:
    """Tiny CLIP + a Llama whose 32K-row embeddings make the trained state large next to the Python
    runtime (38 M parameters: with AdamW ≈ 460 MB in fp32): a rank that gathered it to save would stand
    out (checked by making rank 0 gather it: 1.36× the median, against 1.01× here)."""
    from llava15.testing import make_tiny_clip, make_tiny_llama

    root = tmp_path_factory.mktemp("mid")
    llama = make_tiny_llama(root / "llama", vocab_size=32064, hidden_size=512, intermediate_size=1024,
                            num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=4)
    return {"clip": str(make_tiny_clip(root / "clip")), "llama": str(llama)}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return write_dataset(tmp_path_factory.mktemp("data"), n=N_RECORDS - 4, text_only=4)


def _cmd(sources, data, out: Path, procs: int, **extra) -> list[str]:
    overrides = tiny_overrides(sources, data, out, **{**RUN, "train.sample_log": str(out / "samples.jsonl"), **extra})
    launcher = [sys.executable]
    if procs > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                     "--master_port", str(random.randint(20000, 40000))]
    return [*launcher, "-m", "llava15.cli", "train", str(TINY_RECIPE), *overrides]


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def reference(mid_sources, data, tmp_path_factory) -> tuple[Path, str]:
    """An uninterrupted 4-process run (checkpoint after every step) and its output."""
    out = tmp_path_factory.mktemp("ref4")
    return out, _run(_cmd(mid_sources, data, out, 4))


def _sample_log(path: Path) -> dict[int, list]:
    steps: dict[int, list] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        steps.setdefault(row["step"], []).extend(row["ids"])
    return steps


def test_no_rank_gathers_the_model_to_save_it(reference) -> None:
    _, log = reference
    peaks = {int(r): float(m) for r, m in re.findall(r"rank (\d): peak host RSS during the save of step-000001: "
                                                      r"([\d.]+) MiB", log)}
    assert sorted(peaks) == [0, 1, 2, 3], log[-3000:]
    median = statistics.median(peaks.values())
    print(f"peak host RSS per rank during the first save (MiB): {peaks}, median {median:.0f}")
    assert max(peaks.values()) <= 1.3 * median, peaks


def test_four_processes_follow_one_process_with_token_balanced_batches(reference, mid_sources, data,
                                                                        tmp_path) -> None:
    out4, log = reference
    assert "balanced by tokens" in log and "4 device(s) × 1 accumulation" in log
    _run(_cmd(mid_sources, data, tmp_path, 1))
    assert read_losses(out4) == pytest.approx(read_losses(tmp_path), rel=1e-4)


def test_killed_run_resumes_bit_identical_and_on_two_processes_sees_every_record_once(
        reference, mid_sources, data, tmp_path) -> None:
    ref_out, _ = reference
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(mid_sources, data, killed, 4), env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    first = killed / "checkpoints" / "step-000001"
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None and not first.is_dir():
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-3000:]}"
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its 4 ranks: no cleanup
    proc.wait()
    assert not (killed / "final").exists()
    two = tmp_path / "two"
    shutil.copytree(killed, two)

    log4 = _run(_cmd(mid_sources, data, killed, 4))  # resume=auto, same world size
    assert "resumed from" in log4
    ours, ref = read_weights(killed / "final"), read_weights(ref_out / "final")
    assert ours.keys() == ref.keys()
    worst = max((ours[k].float() - ref[k].float()).abs().max().item() for k in ref)
    assert worst == 0, f"max |Δweight| after SIGKILL + resume = {worst}"
    print("host RSS per rank after loading the checkpoint (MiB):",
          re.findall(r"rank (\d): host memory after loading the checkpoint: ([\d.]+) MiB", log4))

    log2 = _run(_cmd(mid_sources, data, two, 2, **{"train.sample_log": str(two / "samples.jsonl")}))
    assert "saved by 4 rank(s), now 2" in log2 and "2 device(s) × 2 accumulation" in log2
    steps = _sample_log(two / "samples.jsonl")
    assert sorted(steps) == [1, 2, 3]
    seen = [i for ids in steps.values() for i in ids]
    records = [r["id"] for r in json.loads(Path(data["path"]).read_text())]
    assert sorted(seen) == sorted(records), "every record of the epoch exactly once across both parts"
    assert (two / "final" / "llava15.json").is_file()


def test_a_bad_image_in_a_loader_worker_is_counted_named_and_survived(tmp_path) -> None:
    from llava15.testing import make_tiny_clip, make_tiny_llama

    sources = {"clip": str(make_tiny_clip(tmp_path / "clip")), "llama": str(make_tiny_llama(tmp_path / "llama"))}
    data = write_dataset(tmp_path / "data", n=6, text_only=2)
    (Path(data["image_folder"]) / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")  # img3: unreadable
    out = tmp_path / "run"
    log = _run(_cmd(sources, data, out, 1, **{"data.num_workers": 2, "train.save_steps": 0,
                                             "train.sample_log": "", "data.max_bad_fraction": 0.0}))
    assert "record 'img3'" in log and "unreadable_image" in log, log[-3000:]
    report = json.loads((out / "data_report.json").read_text())
    assert report["while_training"] == {"unreadable_image": 1} and report["skipped"] == 1
    assert (out / "final" / "llava15.json").is_file()


def test_a_wrong_image_folder_stops_before_the_first_step(tmp_path) -> None:
    from llava15.testing import make_tiny_clip, make_tiny_llama

    sources = {"clip": str(make_tiny_clip(tmp_path / "clip")), "llama": str(make_tiny_llama(tmp_path / "llama"))}
    data = write_dataset(tmp_path / "data", n=6, text_only=2)
    wrong = tmp_path / "elsewhere"
    wrong.mkdir()
    proc = subprocess.run(_cmd(sources, {**data, "image_folder": str(wrong)}, tmp_path / "run", 1),
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in output, output[-3000:]
    assert str(wrong) in output and "6 image file(s)" in output and "data.max_bad_fraction" in output
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_resuming_with_another_recipe_is_refused_unless_forced(tmp_path) -> None:
    from llava15.testing import make_tiny_clip, make_tiny_llama

    sources = {"clip": str(make_tiny_clip(tmp_path / "clip")), "llama": str(make_tiny_llama(tmp_path / "llama"))}
    data = write_dataset(tmp_path / "data", n=6, text_only=2)
    out = tmp_path / "run"
    _run(_cmd(sources, data, out, 1, **{"train.max_steps": 1, "train.sample_log": ""}))
    changed = _cmd(sources, data, out, 1, **{"train.max_steps": 2, "train.lr": 1e-4, "train.sample_log": ""})
    proc = subprocess.run(changed, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in output, output[-3000:]
    assert "train.lr" in output and "train.max_steps" in output and "train.resume=force" in output
    forced = _run([*changed, "train.resume=force"])
    assert "resumed from" in forced and "train.resume=force" in forced


def test_a_training_checkpoint_converts_to_the_hf_layout(tmp_path) -> None:
    """`llava15 convert --to hf RUN/checkpoints/step-N DST` gives the model the run had after N steps: the
    `final/` of the same run stopped at N steps."""
    from llava15.testing import make_tiny_clip, make_tiny_llama

    sources = {"clip": str(make_tiny_clip(tmp_path / "clip")), "llama": str(make_tiny_llama(tmp_path / "llama"))}
    data = write_dataset(tmp_path / "data", n=6, text_only=2)
    out = tmp_path / "run"
    _run(_cmd(sources, data, out, 1, **{"train.max_steps": 1, "train.sample_log": ""}))
    dst = tmp_path / "converted"
    proc = subprocess.run([sys.executable, "-m", "llava15.cli", "convert", "--to", "hf",
                           str(out / "checkpoints" / "step-000001"), str(dst)], env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours, final = read_weights(dst), read_weights(out / "final")
    assert ours.keys() == final.keys()
    assert all((ours[k] == final[k]).all() for k in final)
    assert json.loads((dst / "llava15.json").read_text())["template"] == "vicuna_v1"
