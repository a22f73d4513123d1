"""Parameter groups and the learning-rate schedule follow the original recipe."""

from __future__ import annotations

import math

import pytest
import torch

from llava15.config import TrainConfig
from llava15.train.optim import build_optimizer, build_scheduler, lr_factor, param_groups
from tests.train.conftest import tiny_llava


def test_projector_gets_its_own_lr_and_norms_biases_never_decay() -> None:
    model = tiny_llava()
    groups = param_groups(model, lr=2e-4, weight_decay=0.1, projector_lr=2e-5)
    by_id = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    proj_w = named["model.multi_modal_projector.linear_1.weight"]
    assert by_id[id(proj_w)]["lr"] == 2e-5 and by_id[id(proj_w)]["weight_decay"] == 0.1
    assert by_id[id(named["model.multi_modal_projector.linear_1.bias"])]["weight_decay"] == 0.0
    assert by_id[id(named["model.language_model.norm.weight"])]["weight_decay"] == 0.0
    q = named["model.language_model.layers.0.self_attn.q_proj.weight"]
    assert by_id[id(q)]["lr"] == 2e-4 and by_id[id(q)]["weight_decay"] == 0.1
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_frozen_parameters_are_left_out() -> None:
    model = tiny_llava()
    model.requires_grad_(False)
    model.model.multi_modal_projector.requires_grad_(True)
    groups = param_groups(model, lr=1e-3, weight_decay=0.0)
    assert sum(len(g["params"]) for g in groups) == 4
    model.model.multi_modal_projector.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(model, lr=1e-3, weight_decay=0.0)


def test_cosine_with_warmup_matches_hf_schedule() -> None:
    total, warmup = 100, math.ceil(0.03 * 100)
    assert lr_factor(0, total, warmup) == 0.0  # the first update uses lr 0, as HF/the original
    assert lr_factor(1, total, warmup) == pytest.approx(1 / 3)
    assert lr_factor(warmup, total, warmup) == 1.0
    assert lr_factor(total, total, warmup) == pytest.approx(0.0)
    mid = warmup + (total - warmup) // 2
    assert lr_factor(mid, total, warmup) == pytest.approx(0.5 * (1 + math.cos(math.pi * 48 / 97)))


def test_scheduler_drives_optimizer_lr() -> None:
    model = tiny_llava()
    cfg = TrainConfig(lr=1e-3, projector_lr=1e-4, warmup_ratio=0.1)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, total_steps=20, cfg=cfg)
    lrs = []
    for _ in range(3):
        lrs.append(sorted({g["lr"] for g in opt.param_groups}))
        opt.step()
        sched.step()
    assert lrs[0] == [0.0]
    assert lrs[1] == pytest.approx([0.5e-4, 0.5e-3])
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8
    assert isinstance(opt, torch.optim.AdamW)
