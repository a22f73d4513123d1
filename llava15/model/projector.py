"""The vision-language projector: its two types, its one save format and its one load path.

Contract:
- `PROJECTORS`: `mlp2x_gelu` (LLaVA-1.5: Linear → GELU (erf) → Linear) and `linear` (original LLaVA,
  paper Table 1 rows 0-2). HF's `LlavaMultiModalProjector` always holds two Linears; `linear` is
  expressed in it with `projector_hidden_act="linear"` (identity) and `linear_2` = identity matrix,
  zero bias (`identity_linear_2`): the function is exactly the single Linear, the files load in plain
  transformers, and `model.freeze` keeps that `linear_2` frozen. `is_linear(config)` tells the two apart.
- `make_projector(config, dtype)`: fresh weights with PyTorch's default `nn.Linear` init, as the
  original `build_vision_projector` (not transformers' normal(0.02) init).
- Original names: `to_original_names` / `FROM_ORIGINAL` map `multi_modal_projector.linear_{1,2}.*` ⇄
  `model.mm_projector.{0,2}.*` (`model.mm_projector.{weight,bias}` for `linear`), used by the layout
  conversion and by `save_projector`, which writes stage 1's `mm_projector.safetensors` (the file the
  original's stage 2 starts from, `--pretrain_mm_mlp_adapter`).
- `load_projector_init(path) -> dict` (keys `linear_1.weight`… of `LlavaMultiModalProjector`) from a
  stage-1 `mm_projector.bin`/`.safetensors` of either code base, or a whole checkpoint folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from llava15.model.format import ConversionError, load_bin, read_state_dict, rename_keys

PROJECTORS = {"mlp2x_gelu": "gelu", "linear": "linear"}  # llava15 name → HF projector_hidden_act
PROJECTOR_FILE = "mm_projector.safetensors"
# original LLaVA name → canonical HF name
FROM_ORIGINAL: list[tuple[str, str | None]] = [
    (r"^model\.mm_projector\.0\.(weight|bias)$", r"multi_modal_projector.linear_1.\1"),
    (r"^model\.mm_projector\.2\.(weight|bias)$", r"multi_modal_projector.linear_2.\1"),
    (r"^model\.mm_projector\.(weight|bias)$", r"multi_modal_projector.linear_1.\1"),  # `linear` type
]


def is_linear(config: Any) -> bool:
    """Is this LLaVA config's projector the original single Linear (identity `linear_2`)?"""
    return getattr(config, "projector_hidden_act", None) == "linear"


def projector_type(config: Any) -> str:
    return "linear" if is_linear(config) else "mlp2x_gelu"


def identity_linear_2(hidden: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """`linear_2` of a `linear` projector: the identity (the one place this rule is written)."""
    return {"weight": torch.eye(hidden, dtype=dtype), "bias": torch.zeros(hidden, dtype=dtype)}


def is_identity(weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    ident = identity_linear_2(weight.shape[0], weight.dtype)
    return torch.equal(weight, ident["weight"]) and (bias is None or not bias.any())


def make_projector(config: Any, dtype: torch.dtype) -> torch.nn.Module:
    """A freshly initialised projector (PyTorch default Linear init); identity `linear_2` if linear."""
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    proj = LlavaMultiModalProjector(config).to(dtype)
    if is_linear(config):
        with torch.no_grad():
            for name, t in identity_linear_2(proj.linear_2.weight.shape[0], dtype).items():
                getattr(proj.linear_2, name).copy_(t)
    return proj


def to_original_names(tensors: Mapping[str, torch.Tensor], linear: bool, what: str) -> dict[str, torch.Tensor]:
    """Canonical `multi_modal_projector.*` tensors under the original's `model.mm_projector.*` names."""
    if linear:
        w2, b2 = tensors["multi_modal_projector.linear_2.weight"], tensors.get("multi_modal_projector.linear_2.bias")
        if not is_identity(w2, b2):
            raise ConversionError(f"{what}: projector is 'linear' but linear_2 is not the identity; the "
                                  "original single-Linear projector cannot hold it")
        return {f"model.mm_projector.{p}": tensors[f"multi_modal_projector.linear_1.{p}"]
                for p in ("weight", "bias") if f"multi_modal_projector.linear_1.{p}" in tensors}
    rules = [(rf"^multi_modal_projector\.linear_{i}\.(weight|bias)$", rf"model.mm_projector.{j}.\1")
             for i, j in ((1, 0), (2, 2))]
    return rename_keys(tensors, rules, what)


def save_projector(state: Mapping[str, torch.Tensor], out_dir: str | Path, linear: bool,
                   config: dict | None = None) -> Path:
    """Write stage 1's `mm_projector.safetensors` (original names) atomically, plus `config.json` when
    given. `state` may hold the whole model; its `multi_modal_projector.*` entries are taken."""
    from safetensors.torch import save_file

    proj = {"multi_modal_projector." + k.split("multi_modal_projector.", 1)[1]: v.detach().to("cpu").contiguous()
            for k, v in state.items() if "multi_modal_projector." in k}
    if not proj:
        raise ValueError("no multi_modal_projector parameters in the state given to save_projector")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{PROJECTOR_FILE}.tmp"
    save_file(to_original_names(proj, linear, str(out_dir)), str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out_dir / PROJECTOR_FILE)
    if config is not None:
        (out_dir / "config.json").write_text(json.dumps(config, indent=1))
    return out_dir / PROJECTOR_FILE


def load_projector_init(path: str | Path) -> dict[str, torch.Tensor]:
    """Projector weights (`linear_1.*`, `linear_2.*`) from a stage-1 output, projector file or checkpoint."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        for name in (PROJECTOR_FILE, "mm_projector.bin", "projector.safetensors"):
            if (path / name).exists():
                path = path / name
                break
    if path.is_dir():
        tensors = {k: v for k, v in read_state_dict(path).items()
                   if "mm_projector" in k or "multi_modal_projector" in k}
    elif path.suffix == ".safetensors":
        tensors = load_file(str(path))
    else:
        tensors = load_bin(path)
    # any prefix before `mm_projector.` (DeepSpeed/peft wrappers) or `multi_modal_projector.` is dropped
    rules: list[tuple[str, str | None]] = [
        (r"^(?:.*\.)?mm_projector\.0\.(weight|bias)$", r"linear_1.\1"),
        (r"^(?:.*\.)?mm_projector\.2\.(weight|bias)$", r"linear_2.\1"),
        (r"^(?:.*\.)?mm_projector\.(weight|bias)$", r"linear_1.\1"),
        (r"^(?:.*\.)?(?:multi_modal_projector\.)?(linear_[12]\.(weight|bias))$", r"\1"),
    ]
    out = rename_keys(tensors, rules, f"{path} (projector)")
    if not out:
        raise ConversionError(f"{path}: no projector weights found")
    if "linear_2.weight" not in out:  # the original `linear` projector
        w = out["linear_1.weight"]
        out.update({f"linear_2.{k}": v for k, v in identity_linear_2(w.shape[0], w.dtype).items()})
    return out
