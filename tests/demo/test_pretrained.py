"""The demo's pretrained parts: the shipped files are the ones their manifest lists (sha256), they load as
the HF models the demo needs, `llava15 demo pretrain` makes the same layout and manifest, and stage 1
trains the projector only, leaving the pretrained LM and tower bit-identical."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llava15.demo.pretrain import MANIFEST, MANIFEST_KEYS, PRETRAINED, check_pretrained


def test_shipped_parts_match_their_manifest_and_load() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel

    manifest = check_pretrained()  # every file's sha256
    assert set(MANIFEST_KEYS) <= set(manifest)
    assert set(manifest["files"]) == {p.relative_to(PRETRAINED).as_posix() for p in PRETRAINED.rglob("*")
                                      if p.is_file() and p.name != MANIFEST}
    assert manifest["world_lm"]["heldout"] and manifest["vision_tower"]["heldout"]
    tower = CLIPVisionModel.from_pretrained(PRETRAINED / "vision_tower")
    lm = AutoModelForCausalLM.from_pretrained(PRETRAINED / "world_lm")
    tok = AutoTokenizer.from_pretrained(PRETRAINED / "world_lm")
    assert tower.config.image_size == 96 and tower.config.patch_size == 32
    assert lm.config.vocab_size >= len(tok) and tok.convert_tokens_to_ids("<image>") < lm.config.vocab_size
    total = sum(p.stat().st_size for p in PRETRAINED.rglob("*") if p.is_file())
    assert total < 16 * 2**20, f"the shipped parts are {total / 2**20:.1f} MiB"


def test_a_changed_file_is_named(tmp_path) -> None:
    import shutil

    copy = tmp_path / "pretrained"
    shutil.copytree(PRETRAINED, copy)
    (copy / "world_lm" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="world_lm/config.json"):
        check_pretrained(copy)


def _demo_pretrain(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "llava15.cli", "demo", "pretrain", "--smoke", *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_demo_pretrain_makes_the_shipped_layout_and_manifest(tmp_path) -> None:
    """`demo pretrain` makes the shipped layout; `--init` continues its world-LM, tokenizer and tower kept."""
    first, cont = tmp_path / "parts", tmp_path / "focus"
    _demo_pretrain("--out", str(first))
    made = json.loads((first / MANIFEST).read_text())
    shipped = json.loads((PRETRAINED / MANIFEST).read_text())
    assert set(MANIFEST_KEYS) <= set(made) and set(made) == set(shipped) - {"parent"}
    assert set(made["files"]) == set(shipped["files"])
    assert made["command"].startswith("llava15 demo pretrain")
    check_pretrained(first)

    _demo_pretrain("--init", str(first), "--out", str(cont), "--focus", "size,exists", "--separate", "large,small")
    again = json.loads((cont / MANIFEST).read_text())
    assert set(again) == set(made) | {"parent"} and set(again["files"]) == set(shipped["files"])
    assert again["parent"]["command"] == made["command"]
    assert "--focus size,exists --separate large,small" in again["command"]
    check_pretrained(cont)
    kept = [f for f in made["files"] if f.startswith("vision_tower/") or f == "world_lm/tokenizer.model"]
    assert all(again["files"][f] == made["files"][f] for f in kept)  # tokenizer and tower as they were
    assert again["files"]["world_lm/model.safetensors"] != made["files"]["world_lm/model.safetensors"]

    third = tmp_path / "third"  # a continuation of a continuation names the whole chain of commands
    _demo_pretrain("--init", str(cont), "--out", str(third))
    chain = json.loads((third / MANIFEST).read_text())["parent"]
    assert chain["command"] == again["command"] and chain["parent"]["command"] == made["command"]


def test_demo_pretrain_init_names_a_folder_without_parts(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "llava15.cli", "demo", "pretrain", "--smoke", "--init",
                           str(tmp_path), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and f"{tmp_path / MANIFEST} missing" in proc.stderr, proc.stderr[-2000:]


def test_demo_pretrain_names_an_unknown_focus_kind_before_any_work(tmp_path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "llava15.cli", "demo", "pretrain", "--smoke", "--init",
                           str(PRETRAINED), "--out", str(out), "--focus", "colour"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "--focus colour: not a drill kind" in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()


def test_demo_pretrain_names_a_word_it_cannot_separate_before_any_work(tmp_path) -> None:
    out = tmp_path / "out"
    for extra, message in ((["--init", str(PRETRAINED), "--separate", "large,smallish"],
                            "--separate smallish: the tokenizer splits it into 2 tokens"),
                           (["--separate", "large,small"], "--separate moves a trained world-LM's word rows apart: "
                            "it needs --init DIR")):
        proc = subprocess.run([sys.executable, "-m", "llava15.cli", "demo", "pretrain", "--smoke", "--out", str(out),
                               *extra], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr[-2000:]
        assert not out.exists()


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in folder.glob("model*.safetensors"):
        out.update(load_file(f))
    return out


def _assert_lm_and_tower_unchanged(final: dict[str, torch.Tensor], vision: Path, lm: Path, what: str) -> None:
    from safetensors.torch import load_file

    before = {f"language_model.{k}": v for k, v in load_file(lm / "model.safetensors").items()}
    tower = {f"vision_tower.vision_model.{k.removeprefix('vision_model.')}": v
             for k, v in load_file(vision / "model.safetensors").items()}
    frozen = {**before, **tower}
    compared = [name for name in frozen if name in final]
    assert len(compared) > len(frozen) // 2, f"the {what} model does not hold the pretrained weights by name"
    for name in compared:
        assert torch.equal(final[name].to(frozen[name].dtype), frozen[name]), f"{name} changed in {what}"


def test_stage1_and_its_alignment_leave_the_lm_and_the_tower_bit_identical(tmp_path) -> None:
    """The paper's stage 1 on the demo's recipe, then the alignment term: only the projector changes,
    and the alignment brings the projected patches closer to the LM's symbolic scenes."""
    from llava15.demo.align import read_scenes
    from llava15.demo.common import SMOKE_WORLD, align_stage1, pretrained_parts, train_stage1
    from llava15.demo.world import synthesize

    vision, lm = pretrained_parts()
    world = synthesize(tmp_path / "data", seed=0, **SMOKE_WORLD)
    stage1 = train_stage1(world, vision, lm, tmp_path / "stage1", ["train.max_steps=3"])
    final = _weights(stage1 / "final")
    _assert_lm_and_tower_unchanged(final, vision, lm, "stage-1")
    projector = [k for k in final if k.startswith("multi_modal_projector.")]
    assert projector and (stage1 / "mm_projector.safetensors").is_file()

    aligned, report = align_stage1(world, stage1, tmp_path / "align")
    after = _weights(aligned / "final")
    _assert_lm_and_tower_unchanged(after, vision, lm, "aligned stage-1")
    assert set(after) == set(final)
    assert any(not torch.equal(after[k], final[k]) for k in projector)
    assert report["mse_after"] < 0.5 * report["mse_before"], report
    assert report["patches"] == 2 * len(read_scenes(world["scenes"], "pretrain")) * 9
