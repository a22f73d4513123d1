"""Setup and final save for `run.py`: the model as the recipe asks, the data, the finished checkpoint.

`build_model` assembles (or loads) the model in fp32 master weights, loads the stage-1 projector when
given, adds LoRA adapters, applies the stage's freezing (and prints the table), enables activation
checkpointing, then places it: FSDP2 across ranks (bf16 compute on GPU through FSDP's mixed-precision
policy) or one device (bf16 autocast, frozen weights stored in bf16: `train.precision` bf16, or auto
on GPU; CPUs with AMX gain from it too). `text_config.use_cache`
is switched off: with a cache object transformers does not detect packed sequences (hf_llava.md §0.1).
With `data.batching: pack` an `sdpa` language model runs `model.packed_attention` (each packed sample
attends to itself only, at its own length's cost), and `data.pack_tokens: 0` then packs each
micro-batch into one row, so no row is padded. With `train.last_layer_supervised_only` (default) the
last decoder layer computes its row-wise work only on supervised rows (`model.last_layer_rows`).

`build_data` makes the lazy dataset, the per-epoch sample order (seeded permutation for packing, the
original modality-grouped order otherwise) and the collator. `save_final` writes `output_dir/final/`
(self-describing HF layout, loads with `llava15.load`), `mm_projector.safetensors` for stage 1, and
for LoRA the adapter in `output_dir/adapter/` merged into `final/`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import torch

from llava15.config import RecipeConfig, recipe_to_dict
from llava15.train import checkpoint as ckpt
from llava15.train.batches import random_order
from llava15.train.distributed import DistInfo, barrier, shard_model
from llava15.train.logging import say


def wants_bf16(cfg: RecipeConfig, dist: DistInfo) -> bool:
    precision = cfg.train.precision
    return precision == "bf16" or (precision == "auto" and dist.device.type == "cuda")


def _weights_dtype(cfg: RecipeConfig) -> torch.dtype:
    return torch.float32 if cfg.model.dtype == "auto" else getattr(torch, cfg.model.dtype)


def load_base(cfg: RecipeConfig):
    """(model, tokenizer, ImageSettings) before any training change."""
    from llava15.model.build import build_llava
    from llava15.model.convert import load_projector_init
    from llava15.model.load import load_bundle

    m = cfg.model
    if m.init_checkpoint:
        bundle = load_bundle(m.init_checkpoint, dtype=_weights_dtype(cfg))
        model, tok, image = bundle.model, bundle.tokenizer, bundle.image
        # The checkpoint's projector is the one that trains; record it, not the `model.projector` default.
        m.projector = "linear" if model.config.projector_hidden_act == "linear" else "mlp2x_gelu"
    else:
        model, tok, image = build_llava(m.vision_tower, m.llm, projector=m.projector,
                                        vision_feature_layer=m.vision_feature_layer,
                                        vision_feature_select_strategy=m.vision_feature_select_strategy,
                                        dtype=_weights_dtype(cfg), attn_implementation=m.attn_implementation)
    if m.init_projector:
        proj = model.model.multi_modal_projector
        weights = load_projector_init(m.init_projector)
        proj.load_state_dict({k: v.to(proj.linear_1.weight.dtype) for k, v in weights.items()})
    image = dataclasses.replace(image, aspect_ratio=cfg.data.image_aspect_ratio)
    return model, tok, image


def build_model(cfg: RecipeConfig, dist: DistInfo):
    """The model ready to train, its tokenizer, ImageSettings and the step-context fields."""
    from llava15.model.freeze import apply_freeze
    from llava15.model.last_layer_rows import LastLayerRows
    from llava15.model.load import num_image_tokens
    from llava15.model.packed_attention import PACKED_SDPA, use_packed_attention

    stage = cfg.train.stage
    if (stage == "projector+lora") != cfg.lora.enabled:
        raise ValueError(f"train.stage={stage!r} and lora.enabled={cfg.lora.enabled} disagree: LoRA runs use "
                         "train.stage=projector+lora with lora.enabled=true")
    model, tok, image = load_base(cfg)
    model.config.text_config.use_cache = False
    if cfg.data.batching == "pack" and use_packed_attention(model):
        say(f"attention: {PACKED_SDPA} (each packed sample attends to itself only, at its own length's cost)",
            dist.is_main)
    config = model.config
    ctx_kw = {"image_token_id": int(config.image_token_id), "num_image_tokens": num_image_tokens(config),
              "image_size": int(config.vision_config.image_size),
              "text_needs_grad": stage != "projector"}
    if cfg.lora.enabled:
        from llava15.model.lora import apply_lora

        model = apply_lora(model, r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout)
    say(f"trainable parameters ({stage}):\n{apply_freeze(model, stage)}", dist.is_main)
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    bf16 = wants_bf16(cfg, dist)
    model.to(dist.device)
    ctx_kw["autocast_dtype"] = None
    precision = "fp32"
    if dist.distributed:
        fsdp_bf16 = bf16 and dist.device.type == "cuda"
        shard_model(model, bf16=fsdp_bf16, device=dist.device)
        if fsdp_bf16:
            precision = "bf16 compute, fp32 gradient reduction (FSDP2 mixed precision)"
        elif bf16:
            precision = "fp32 (FSDP2 mixed precision is used on GPU only)"
    elif bf16:
        ctx_kw["autocast_dtype"] = bf16_on_one_device(model)
        precision = "bf16 autocast; frozen weights stored in bf16, trained weights and optimizer in fp32"
    say(f"precision: {precision}", dist.is_main)
    last_layer = LastLayerRows(model) if cfg.train.last_layer_supervised_only else None
    if last_layer is not None:
        say(last_layer.describe(), dist.is_main)
        last_layer = last_layer if last_layer.enabled else None
    ctx_kw["last_layer"] = last_layer
    if cfg.train.compile:
        # the last layer's row hooks and per-sample query ranges would break its graph every step
        n = compile_decoder_layers(model, skip_last=last_layer is not None)
        say(f"train.compile: {n} decoder layers of the language model compiled (dynamic shapes)"
            + ("; the last one runs eager, on supervised rows only" if last_layer is not None else ""),
            dist.is_main)
    return model, tok, image, ctx_kw


def bf16_on_one_device(model: torch.nn.Module) -> torch.dtype:
    """bf16 mixed precision without FSDP: frozen weights stored in bf16 (half their memory, and no cast
    per step), trained ones kept fp32 for the optimizer; returns the autocast dtype for the step."""
    for p in model.parameters():
        if not p.requires_grad:
            p.data = p.data.to(torch.bfloat16)
    return torch.bfloat16


def compile_decoder_layers(model: torch.nn.Module, skip_last: bool = False) -> int:
    """`torch.compile` each decoder layer of the language model in place (`nn.Module.compile`, dynamic
    shapes), all but the last with `skip_last`; returns how many.

    Why per layer: compiling the whole LLaVA forward breaks its graph at the image scatter and at the
    supervised-position selection and recompiles for every new sequence length (bench-small stage 2 on
    a 2-core CPU: 99 s of warm-up, then slower than eager). One dynamic graph per layer compiles once
    (~20 s there) and fuses the layer's small operations (RMSNorm, rotary, SiLU-gate, residuals):
    4 steps took 13.5 s against 15.3 s eager. The layers keep their modules, so FSDP2 sharding,
    activation checkpointing, LoRA and saving see the same model."""
    from llava15.model.last_layer_rows import decoder_layers

    layers = decoder_layers(model)
    if layers is None:
        raise ValueError("train.compile: no `language_model.layers` list of decoder layers in this model; "
                         "set train.compile=false")
    chosen = list(layers)[:-1] if skip_last else list(layers)
    for layer in chosen:
        layer.compile(dynamic=True)
    return len(chosen)


def build_data(cfg: RecipeConfig, tok, image, model, dist: DistInfo):
    """(dataset, order function, collate function) for the recipe's data section."""
    from llava15.data.collate import Collator
    from llava15.data.dataset import LlavaDataset
    from llava15.model.load import num_image_tokens
    from llava15.model.packed_attention import PACKED_SDPA

    d = cfg.data
    config = model.config
    n_img = num_image_tokens(config)
    dataset = LlavaDataset(d.path, tok, d.template, int(config.image_token_id), image_folder=d.image_folder or None,
                           num_image_tokens=n_img, model_max_length=d.model_max_length,
                           image_mode=d.image_aspect_ratio, image_size=image.size, mean=image.mean,
                           std=image.std, bad_records=d.bad_records)
    if d.batching == "pack":
        order = random_order(len(dataset), cfg.train.seed)
    else:
        order = grouped_order(dataset.modality_lengths, cfg, dist)
    budget = d.pack_tokens or d.model_max_length
    if not d.pack_tokens and config.get_text_config()._attn_implementation == PACKED_SDPA:
        budget *= cfg.train.micro_batch_size  # every sample of a micro-batch fits one row: no padding
    collate = Collator(pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
                       image_token_id=int(config.image_token_id), num_image_tokens=n_img,
                       mode="pack" if d.batching == "pack" else "pad", padding_side=d.padding_side,
                       pack_tokens=budget, image_size=image.size)
    return dataset, order, collate


def grouped_order(lengths: list[int], cfg: RecipeConfig, dist: DistInfo):
    """The original `group_by_modality_length` order, its global-RNG draws seeded per epoch."""
    from llava15.data.sampler import modality_grouped_indices

    t = cfg.train
    accum = t.global_batch_size // (t.micro_batch_size * dist.world_size)

    def order(epoch: int) -> list[int]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(t.seed + epoch)
            gen = torch.Generator().manual_seed(t.seed + epoch)
            return list(modality_grouped_indices(lengths, t.micro_batch_size, dist.world_size * accum, gen))
    return order


def save_final(model, tok, image, cfg: RecipeConfig, out: Path, dist: DistInfo) -> None:
    """Write final/ (and the stage-1 projector, the LoRA adapter); every rank must call it."""
    from llava15.model.load import canonical_state_dict, write_checkpoint

    state = ckpt.full_model_state(model)  # collective under FSDP2
    if dist.is_main:
        final, tmp = out / "final", out / ".final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        recipe = recipe_to_dict(cfg)
        if cfg.train.stage == "projector":
            cfg_text = model.config.text_config
            ckpt.save_projector(state, out, config={
                "mm_projector_type": cfg.model.projector, "mm_hidden_size": model.config.vision_config.hidden_size,
                "hidden_size": cfg_text.hidden_size, "mm_vision_tower": cfg.model.vision_tower,
                "mm_vision_select_layer": cfg.model.vision_feature_layer, "image_aspect_ratio": image.aspect_ratio,
                "tune_mm_mlp_adapter": True, "model_type": "llava"})
        if cfg.lora.enabled:
            _save_lora_final(model, state, tok, image, cfg, out, tmp)
        else:
            shim = SimpleNamespace(config=_unwrap(model).config, state_dict=lambda: state)
            write_checkpoint(canonical_state_dict(shim), shim.config, _unwrap(model).generation_config, tok,
                             tmp, cfg.data.template, image, recipe=recipe)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    barrier()


def _unwrap(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _save_lora_final(model, state, tok, image, cfg: RecipeConfig, out: Path, tmp: Path) -> None:
    """Adapter + projector in out/adapter (base recorded), merged full model in `tmp`."""
    from llava15.model.load import save_checkpoint
    from llava15.model.lora import merge_lora, save_lora

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
