"""`llava15 convert --to hf RUN/checkpoints/step-N DST`: a resumable (sharded) training checkpoint as a
self-describing HF checkpoint, offline, in one process.

A training checkpoint holds only the trained parameters (`train.checkpoint`); the rest comes from the
run's recipe (`recipe.yaml` in the checkpoint): the model is rebuilt as the run built it
(`train.setup.load_base`, LoRA adapters when the run had them), the trained parameters are read from the
DCP files, and the result is saved like `final/` (a LoRA run: merged into its base). A QLoRA run is
merged onto the full-precision base here (the quantized base is not rebuilt). Every other source
(original LLaVA layout ⇄ HF) goes to `model.convert`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from llava15.config import load_recipe, recipe_to_dict


def checkpoint_to_hf(src: str | Path, dst: str | Path) -> Path:
    """Write the model state of training checkpoint `src` as a llava15 checkpoint in `dst`."""
    from llava15.model.freeze import apply_freeze
    from llava15.model.save import save_checkpoint
    from llava15.train.checkpoint import trainable_from_checkpoint
    from llava15.train.setup import load_base

    src, dst = Path(src), Path(dst)
    cfg = load_recipe(src / "recipe.yaml")
    model, tok, image = load_base(cfg)
    if cfg.lora.enabled:
        from llava15.model.lora import apply_lora

        model = apply_lora(model, r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout)
    apply_freeze(model, cfg.train.stage)
    trainable_from_checkpoint(src, model)
    if not cfg.lora.enabled:
        return save_checkpoint(model, tok, dst, cfg.data.template, image, recipe=recipe_to_dict(cfg))
    from llava15.model.lora import merge_lora, save_lora

    base = cfg.model.init_checkpoint
    with tempfile.TemporaryDirectory(prefix="llava15-export-") as tmp:
        if not base:
            base_model, base_tok, base_image = load_base(cfg)
            save_checkpoint(base_model, base_tok, Path(tmp) / "base", cfg.data.template, base_image)
            base = str(Path(tmp) / "base")
        save_lora(model, Path(tmp) / "adapter", base, cfg.data.template, image, recipe=recipe_to_dict(cfg))
        return merge_lora(Path(tmp) / "adapter", dst)


def run_convert(args: Any) -> int:
    """`llava15 convert --to hf|original SRC DST`: a training checkpoint (`checkpoints/step-N`) or an
    original-layout / HF folder."""
    from llava15.train.checkpoint import is_checkpoint

    if args.to == "hf" and is_checkpoint(args.src):
        out = checkpoint_to_hf(args.src, args.dst)
        print(f"wrote hf checkpoint of training checkpoint {args.src} to {out}")
        return 0
    from llava15.model.convert import run_convert as convert_layout

    return convert_layout(args)
