"""A newcomer's mistakes, each through the real `llava15` command: one clear line, no traceback.

Every case runs `python -m llava15.cli` in a fresh process and checks that it exits non-zero, prints no
`Traceback`, and names the file, key, record, argument or id at fault (and, where there is one, what
to do). Most fail in the checks that run before anything loads, so the whole file takes seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "LLAVA15_DEBUG"}
    full_env.update(HF_HUB_OFFLINE="1", **env)  # offline: never wait on the network here
    return subprocess.run([sys.executable, "-m", "llava15.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=300)


def _fails_cleanly(proc: subprocess.CompletedProcess, *needles: str, status: int = 1) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == status, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out[-3000:]}"
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_llava_dir) -> Path:
    """A folder with every bad input of the cases below (and one good checkpoint)."""
    root = tmp_path_factory.mktemp("newcomer")
    (root / "bad.yaml").write_text("model:\n  llm: x\n   oops: [\n")
    (root / "dup.yaml").write_text("train:\n  lr: 1.0e-3\n  seed: 1\n  lr: 2.0e-3\n")
    good = {"id": "ok", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
    lines = [json.dumps(good).encode(), b'{"id": "latin1", "conversations": "caf\xe9"}', b'{"id": "cut", "conv',
             json.dumps(good).encode()]
    (root / "bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    truncated = root / "truncated"
    shutil.copytree(tiny_llava_dir, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    (root / "full").mkdir()
    (root / "full" / "keep.txt").write_text("someone's earlier output\n")
    return root


def test_config_mistakes_name_the_key_or_the_file_and_line(files):
    _fails_cleanly(_run(["train", "tiny_cpu", "train.bogus=1"], files), "'train.bogus'", "--list-keys")
    _fails_cleanly(_run(["train", "tiny_cpu", "train.lr=abc"], files), "train.lr", "expected float")
    _fails_cleanly(_run(["train", "bad.yaml"], files), "bad.yaml, line 3")
    _fails_cleanly(_run(["train", "dup.yaml"], files), "dup.yaml, line 4", "duplicate key 'lr'")
    _fails_cleanly(_run(["train", "tiny_cpu", "train.stage=projector+lora"], files), "lora.enabled")
    _fails_cleanly(_run(["train", "no_such_recipe"], files), "no_such_recipe", "stage2_finetune")
    _fails_cleanly(_run(["train", "tiny_cpu", "data.path=missing.json"], files), "data.path missing.json")
    _fails_cleanly(_run(["train", "tiny_cpu", "data.template=vicuna"], files), "data.template", "vicuna_v1")


def test_data_mistakes_name_the_file_and_line(files):
    _fails_cleanly(_run(["data", "check", "missing.json"], files), "missing.json", "no such file")
    out = _fails_cleanly(_run(["data", "check", "bad.jsonl"], files), "line 2", "line 3", "not UTF-8",
                         "not valid JSON", "4 records, 2 good, 2 bad")
    assert "not checked: token lengths" in out
    report = json.loads(_run(["data", "check", "bad.jsonl", "--json", "--max-problem-fraction", "0.5"],
                             files).stdout)
    assert report["ok"] and report["problems"]["bad_json"]["examples"] == ["#2 (line 3)"]
    _fails_cleanly(_run(["data", "check", "bad.jsonl", "--tokenizer", "./no-tokenizer"], files),
                   "--tokenizer ./no-tokenizer", "no such folder")


def test_model_mistakes_name_the_folder_file_or_id(files, tiny_llava_dir):
    _fails_cleanly(_run(["chat", "--model", "truncated"], files), "truncated/model.safetensors", "truncated")
    _fails_cleanly(_run(["chat", "--model", "someone/not-downloaded-llava"], files),
                   "someone/not-downloaded-llava", "HF_HUB_OFFLINE=1", "hub cache")
    _fails_cleanly(_run(["chat", "--model", "./no-model"], files), "--model ./no-model", "no such folder")
    _fails_cleanly(_run(["chat", "--model", str(tiny_llava_dir), "--image", "nope.png"], files),
                   "--image nope.png", "no such file")
    _fails_cleanly(_run(["merge", str(tiny_llava_dir), "merged"], files), "not a llava15 LoRA adapter folder",
                   "describes a full checkpoint")
    _fails_cleanly(_run(["eval", "run", "--model", str(tiny_llava_dir), "--benchmarks", "pope", "--data-root",
                         "no-eval-data", "--out", "ev"], files), "--data-root no-eval-data", "no such folder")


def test_unknown_choices_are_usage_errors_that_list_the_known_ones(files, tiny_llava_dir):
    _fails_cleanly(_run(["eval", "run", "--model", str(tiny_llava_dir), "--benchmarks", "pope,nope", "--data-root",
                         ".", "--out", "ev"], files), "unknown benchmark nope", "mmbench_cn", status=2)
    _fails_cleanly(_run(["chat", "--model", str(tiny_llava_dir), "--template", "vicuna"], files),
                   "unknown template 'vicuna'", "vicuna_v1", "llama3", status=2)


def test_existing_destinations_are_refused_without_overwrite(files, tiny_llava_dir):
    for args in (["convert", "--to", "original", str(tiny_llava_dir), "full"],
                 ["export", "--to", "vllm", str(tiny_llava_dir), "full"],
                 ["demo", "--smoke", "--out", "full"]):
        _fails_cleanly(_run(args, files), "full exists and is not empty", "--overwrite")
    assert (files / "full" / "keep.txt").read_text() == "someone's earlier output\n"


def test_a_taken_port_is_named_before_the_model_loads(files, tiny_llava_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _run(["serve", "--model", str(tiny_llava_dir), "--port", str(port)], files)
    _fails_cleanly(proc, f"--port {port}", "already in use")


def test_debug_shows_the_traceback_and_an_unexpected_error_asks_for_a_report(files, capsys):
    out = _run(["train", "tiny_cpu", "train.bogus=1"], files, LLAVA15_DEBUG="1").stderr
    assert "Traceback" in out and "'train.bogus'" in out
    out = _run(["train", "tiny_cpu", "train.bogus=1", "--debug"], files).stderr
    assert "Traceback" in out

    from llava15.cli import _report, describe_error
    from llava15.data.templates import get_template

    try:
        get_template("nope")  # a message llava15 wrote for the user
    except ValueError as exc:
        assert "known templates" in describe_error(exc)
    try:
        {}["key"]  # an operation that failed: a bug
    except KeyError as exc:
        assert describe_error(exc) is None
        assert _report(exc, "llava15 x", debug=False) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "please report it" in err


def test_demo_overwrite_replaces_only_the_demos_own_outputs(tmp_path):
    from llava15.demo.common import OUTPUTS, clear_previous_outputs

    for name in OUTPUTS:
        (tmp_path / name).mkdir() if "." not in name else (tmp_path / name).write_text("{}")
    (tmp_path / "stage2" / "final").mkdir()
    (tmp_path / "notes.txt").write_text("mine\n")
    clear_previous_outputs(tmp_path, keep=str(tmp_path / "stage2" / "final"))  # --eval-only's checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "stage2"]
    assert (tmp_path / "stage2" / "final").is_dir()
