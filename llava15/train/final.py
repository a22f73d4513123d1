"""The finished run's outputs: `output_dir/final/` and, per stage, the projector or the LoRA adapter.

`save_final(model, tok, image, cfg, out, dist)` (every rank calls it) writes `final/`, a self-describing
checkpoint in the HF layout that `llava15.load` and plain transformers load. The weights stream: one
tensor at a time is gathered from its shards (`DTensor.full_tensor`, every rank takes part) and rank 0
adds it to the safetensors shard being filled, which is written as soon as it is full — no process
ever holds the whole model. Stage 1 also writes `mm_projector.safetensors` (original key names: the
file stage 2 starts from); LoRA runs write the adapter with the projector in `adapter/` and merge it
into `final/`. `final/` is written to a temporary folder and renamed into place, so an interrupted save
never leaves a half-written `final/`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

from llava15.config import RecipeConfig, recipe_to_dict
from llava15.data.images import ImageSettings
from llava15.train.distributed import DistInfo, barrier


def full_tensors(model: torch.nn.Module, is_main: bool) -> Iterator[tuple[str, torch.Tensor | None]]:
    """Every state-dict entry, whole, on rank 0's CPU (None elsewhere); one all-gather per sharded
    tensor, in the same order on every rank."""
    for name, t in model.state_dict().items():
        if hasattr(t, "full_tensor"):
            t = t.full_tensor()
        yield name, (t.detach().to("cpu") if is_main else None)


def save_final(model, tok, image: ImageSettings, cfg: RecipeConfig, out: Path, dist: DistInfo) -> None:
    """Write final/ (and the stage-1 projector, the LoRA adapter); every rank must call it."""
    from llava15.model.format import canonical_name
    from llava15.model.projector import is_linear, save_projector
    from llava15.model.save import write_checkpoint

    final, tmp = out / "final", out / ".final.tmp"
    if dist.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    config = _unwrap(model).config
    if cfg.lora.enabled:
        state = {n: t for n, t in full_tensors(model, dist.is_main)}  # adapters: small models, one gather
        if dist.is_main:
            _save_lora_final(model, state, tok, image, cfg, out, tmp)
    else:
        projector: dict[str, torch.Tensor] = {}
        vision_type, tied = config.vision_config.model_type, bool(config.tie_word_embeddings)

        def canonical() -> Iterator[tuple[str, torch.Tensor]]:
            for name, t in full_tensors(model, dist.is_main):
                new = canonical_name(name, vision_type, tied)
                if new is not None and t is not None:
                    if new.startswith("multi_modal_projector."):
                        projector[new] = t
                    yield new, t

        if dist.is_main:
            write_checkpoint(canonical(), config, _unwrap(model).generation_config, tok, tmp, cfg.data.template,
                             image, recipe=recipe_to_dict(cfg))
            if cfg.train.stage == "projector":
                save_projector(projector, out, is_linear(config), config={
                    "mm_projector_type": cfg.model.projector, "mm_hidden_size": config.vision_config.hidden_size,
                    "hidden_size": config.text_config.hidden_size, "mm_vision_tower": cfg.model.vision_tower,
                    "mm_vision_select_layer": cfg.model.vision_feature_layer,
                    "image_aspect_ratio": image.aspect_ratio, "tune_mm_mlp_adapter": True, "model_type": "llava"})
        else:
            for _ in canonical():  # the same all-gathers as rank 0, in its order
                pass
    if dist.is_main:
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
