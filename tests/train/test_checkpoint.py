"""Checkpoints are atomic, pruned to the last K, restore exactly, and stage 1 writes its projector."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from llava15.config import TrainConfig
from llava15.model.projector import save_projector
from llava15.train.checkpoint import Checkpointer, list_checkpoints, load_training_state, resolve_resume
from llava15.train.distributed import DistInfo
from llava15.train.optim import build_optimizer
from tests.train.conftest import tiny_llava

ONE = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _trained(seed: int = 0):
    model = tiny_llava(seed)
    model.model.vision_tower.requires_grad_(False)
    opt = build_optimizer(model, TrainConfig(lr=1e-2))
    ids = torch.randint(0, 50, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    opt.zero_grad()
    return model, opt


def save_training_state(out, step, model, opt, state, dist, keep_last, async_save=False):
    saver = Checkpointer(out, dist, keep_last, "train: {}\n", async_save=async_save)
    saver.save(step, model, opt, {"scheduler": {}, "samples_consumed": step * 8, **state})
    saver.wait()


@pytest.mark.parametrize("async_save", [False, True])
def test_save_resume_roundtrip_and_keep_last(tmp_path, async_save) -> None:
    model, opt = _trained()
    for step in (2, 4, 6):
        save_training_state(tmp_path, step, model, opt, {}, ONE, keep_last=2, async_save=async_save)
    ckpts = list_checkpoints(tmp_path)
    assert [p.name for p in ckpts] == ["step-000004", "step-000006"]
    assert resolve_resume("auto", tmp_path) == ckpts[-1]
    assert resolve_resume("none", tmp_path) is None
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))

    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    save_training_state(tmp_path, 8, model, opt, {}, ONE, keep_last=2)
    fresh, fresh_opt = _trained(seed=5)
    torch.manual_seed(999)
    state = load_training_state(resolve_resume("auto", tmp_path), fresh, fresh_opt, ONE)
    assert state["step"] == 8
    torch.testing.assert_close(torch.rand(3), expected_draw)  # RNG restored
    for (n, a), b in zip(model.named_parameters(), fresh.parameters()):
        if a.requires_grad:
            assert torch.equal(a, b), n
    s1, s2 = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert all(torch.equal(s1[k]["exp_avg"], s2[k]["exp_avg"]) for k in s1)


def test_interrupted_save_leaves_latest_intact(tmp_path) -> None:
    model, opt = _trained()
    save_training_state(tmp_path, 2, model, opt, {}, ONE, keep_last=3)
    broken = tmp_path / "checkpoints" / ".tmp-step-000004"  # what a crash mid-save leaves
    broken.mkdir()
    (broken / "__0_0.distcp").write_bytes(b"partial")
    assert resolve_resume("auto", tmp_path).name == "step-000002"
    save_training_state(tmp_path, 4, model, opt, {}, ONE, keep_last=3)
    assert not broken.exists()
    assert json.loads((tmp_path / "checkpoints/step-000004/state.json").read_text())["step"] == 4


def test_projector_file_uses_original_key_names(tmp_path) -> None:
    model = tiny_llava()
    path = save_projector(model.state_dict(), tmp_path, linear=False, config={"mm_projector_type": "mlp2x_gelu"})
    tensors = load_file(path)
    assert sorted(tensors) == ["model.mm_projector.0.bias", "model.mm_projector.0.weight",
                               "model.mm_projector.2.bias", "model.mm_projector.2.weight"]
    torch.testing.assert_close(tensors["model.mm_projector.2.weight"],
                               model.model.multi_modal_projector.linear_2.weight)
