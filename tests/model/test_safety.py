"""Legacy .bin weights are read with torch.load(weights_only=True) only: a code-executing pickle fails."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from llava15.model.format import UnsafeCheckpointError, load_bin, read_state_dict


class _Payload:
    """Unpickling this calls `exec`, which would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_malicious_bin_raises_naming_the_file_and_executes_nothing(tmp_path):
    marker = tmp_path / "executed.txt"
    folder = tmp_path / "ckpt"
    folder.mkdir()
    bad = folder / "pytorch_model.bin"
    torch.save({"model.embed_tokens.weight": torch.zeros(2, 2), "x": _Payload(marker)}, bad)
    # The payload is real: an unsafe load of a copy runs it (into a different marker file).
    probe = tmp_path / "probe.bin"
    torch.save({"x": _Payload(tmp_path / "probe-ran.txt")}, probe)
    torch.load(probe, weights_only=False)
    assert (tmp_path / "probe-ran.txt").exists()
    with pytest.raises(UnsafeCheckpointError, match="pytorch_model.bin") as err:
        read_state_dict(folder)
    assert "weights_only" in str(err.value)
    assert not marker.exists()


def test_plain_pickle_payload_is_refused_too(tmp_path):
    marker = tmp_path / "executed.txt"
    bad = tmp_path / "mm_projector.bin"
    bad.write_bytes(pickle.dumps({"w": _Payload(marker)}))
    with pytest.raises(UnsafeCheckpointError, match="mm_projector.bin"):
        load_bin(bad)
    assert not marker.exists()


def test_tensor_only_bin_loads(tmp_path):
    torch.save({"a": torch.arange(3)}, tmp_path / "pytorch_model.bin")
    assert torch.equal(read_state_dict(tmp_path)["a"], torch.arange(3))
