"""Which device a training rank takes (`train.device`), and the errors when it cannot have it."""

from __future__ import annotations

import pytest
import torch

from llava15.config import ConfigError, TrainConfig
from llava15.train.distributed import init_distributed


def test_cpu_is_taken_when_asked_for_even_with_cuda() -> None:
    assert init_distributed("cpu").device == torch.device("cpu")


def test_unknown_device_is_refused_by_the_config() -> None:
    with pytest.raises(ConfigError, match="train.device"):
        TrainConfig(device="gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where torch sees no CUDA device")
def test_cuda_asked_for_without_cuda_names_the_way_out() -> None:
    with pytest.raises(RuntimeError, match="train.device=cuda.*no CUDA device.*train.device=cpu"):
        init_distributed("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_more_ranks_than_gpus_names_nproc_per_node(monkeypatch) -> None:
    monkeypatch.setenv("LOCAL_RANK", str(torch.cuda.device_count()))
    with pytest.raises(RuntimeError, match="has no GPU.*--nproc_per_node.*train.device=cpu"):
        init_distributed("auto")
