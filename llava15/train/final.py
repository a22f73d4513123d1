"""The finished run's outputs: `output_dir/final/` and, per stage, the projector or the LoRA adapter.

`save_final(model, tok, image, cfg, out, dist)` (every rank calls it) writes `final/`, a self-describing
checkpoint in the HF layout that `llava15.load` and plain transformers load; for stage 1 also
`mm_projector.safetensors` (original key names: the file stage 2 starts from); for LoRA the adapter
with the projector in `adapter/`, merged into `final/`. `final/` is written to a temporary folder and
renamed into place, so an interrupted save never leaves a half-written `final/`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import torch

from llava15.config import RecipeConfig, recipe_to_dict
from llava15.data.images import ImageSettings
from llava15.train import checkpoint as ckpt
from llava15.train.distributed import DistInfo, barrier


def save_final(model, tok, image: ImageSettings, cfg: RecipeConfig, out: Path, dist: DistInfo) -> None:
    """Write final/ (and the stage-1 projector, the LoRA adapter); every rank must call it."""
    from llava15.model.format import canonical_state_dict
    from llava15.model.projector import is_linear, save_projector
    from llava15.model.save import write_checkpoint

    state = ckpt.full_model_state(model)  # collective under FSDP2
    if dist.is_main:
        final, tmp = out / "final", out / ".final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        config = _unwrap(model).config
        if cfg.train.stage == "projector":
            save_projector(state, out, is_linear(config), config={
                "mm_projector_type": cfg.model.projector, "mm_hidden_size": config.vision_config.hidden_size,
                "hidden_size": config.text_config.hidden_size, "mm_vision_tower": cfg.model.vision_tower,
                "mm_vision_select_layer": cfg.model.vision_feature_layer, "image_aspect_ratio": image.aspect_ratio,
                "tune_mm_mlp_adapter": True, "model_type": "llava"})
        if cfg.lora.enabled:
            _save_lora_final(model, state, tok, image, cfg, out, tmp)
        else:
            shim = SimpleNamespace(config=config, state_dict=lambda: state)
            write_checkpoint(canonical_state_dict(shim), config, _unwrap(model).generation_config, tok,
                             tmp, cfg.data.template, image, recipe=recipe_to_dict(cfg))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    barrier()


def _unwrap(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _save_lora_final(model, state, tok, image: ImageSettings, cfg: RecipeConfig, out: Path, tmp: Path) -> None:
    """Adapter + projector in out/adapter (base recorded), merged full model in `tmp`."""
    from llava15.model.lora import merge_lora, save_lora
    from llava15.model.save import save_checkpoint
    from llava15.train.setup import load_base

    base = cfg.model.init_checkpoint
    if not base:  # assembled from tower + LLM: the adapter needs a base checkpoint to refer to
        base_dir = out / "base"
        if not (base_dir / "config.json").exists():
            base_model, base_tok, base_image = load_base(cfg)
            save_checkpoint(base_model, base_tok, base_dir, cfg.data.template, base_image)
            del base_model
        base = str(base_dir.resolve())
    if isinstance(next(iter(model.parameters())), torch.Tensor) and \
            type(next(iter(model.parameters())).data) is torch.Tensor:
        unsharded = model
    else:  # FSDP2: rebuild unsharded on CPU and load the gathered weights
        from llava15.model.lora import apply_lora

        unsharded, _, _ = load_base(cfg)
        unsharded = apply_lora(unsharded, r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout)
        unsharded.load_state_dict(state)
    save_lora(unsharded, out / "adapter", base, cfg.data.template, image, recipe=recipe_to_dict(cfg))
    merge_lora(out / "adapter", tmp)
