"""The model as the recipe asks for it, placed and ready to train, with its step context.

`load_base(cfg)` assembles (tower + LLM, `model.build`) or loads (`model.init_checkpoint`) the model in
the recipe's weight dtype, with the stage-1 projector when `model.init_projector` is given.
`build_model(cfg, dist) -> TrainModel` then: switches off `text_config.use_cache` (with a cache object
transformers does not detect packed sequences); under `data.batching: pack` runs the language model with
llava15's packed attention (`model.packed_attention`); adds LoRA adapters; applies the stage's freezing
(and prints the table); enables activation checkpointing (`train.activation_checkpointing`); compiles
the decoder layers when asked (`train.compile`, before sharding, as FSDP2 expects); places and shards the
model (`train.precision`, `train.distributed`); restricts the last decoder layer to supervised rows
(`model.last_layer_rows`). The result carries the typed `StepContext` the loop needs.

Memory: with several ranks only rank 0 reads the weights; the others build the same model on the meta
device, and after sharding rank 0 sends each rank its shards (`set_model_state_dict(...,
broadcast_from_rank0=True)`) and the buffers: host memory holds one copy of the model per node, not
one per rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as tdist

from llava15.config import RecipeConfig
from llava15.data.images import ImageSettings
from llava15.train.distributed import DistInfo
from llava15.train.logging import say
from llava15.train.loop import StepContext
from llava15.train.precision import place_model


@dataclass
class TrainModel:
    """What `build_model` hands to the runner."""

    model: torch.nn.Module
    tokenizer: object
    image: ImageSettings
    step: StepContext
    packed_attention: bool  # the language model isolates packed samples itself (`model.packed_attention`)


def _weights_dtype(cfg: RecipeConfig) -> torch.dtype:
    return torch.float32 if cfg.model.dtype == "auto" else getattr(torch, cfg.model.dtype)


def load_base(cfg: RecipeConfig):
    """(model, tokenizer, ImageSettings) before any training change."""
    from llava15.model.build import build_llava
    from llava15.model.gguf import resolve_llm_source
    from llava15.model.load import load_bundle
    from llava15.model.projector import load_projector_init, projector_type

    m = cfg.model
    if m.init_checkpoint:
        bundle = load_bundle(m.init_checkpoint, dtype=_weights_dtype(cfg))
        model, tok = bundle.model, bundle.tokenizer
        # The checkpoint's projector is the one that trains; record it, not the `model.projector` default.
        m.projector = projector_type(model.config)
        size, mean, std = bundle.image.size, bundle.image.mean, bundle.image.std
    else:
        model, tok, built = build_llava(m.vision_tower, resolve_llm_source(m.llm), projector=m.projector,
                                        vision_feature_layer=m.vision_feature_layer,
                                        vision_feature_select_strategy=m.vision_feature_select_strategy,
                                        dtype=_weights_dtype(cfg), attn_implementation=m.attn_implementation)
        size, mean, std = built.size, built.mean, built.std
    if m.init_projector:
        proj = model.model.multi_modal_projector
        weights = load_projector_init(m.init_projector)
        proj.load_state_dict({k: v.to(proj.linear_1.weight.dtype) for k, v in weights.items()})
    # the recipe decides how this run's images are shaped; the model decides size and normalisation
    return model, tok, ImageSettings(size=size, mean=mean, std=std, aspect_ratio=cfg.data.image_aspect_ratio)


def _load_on_rank0(cfg: RecipeConfig, dist: DistInfo):
    """(model, tokenizer, image): real on rank 0, the same architecture on the meta device elsewhere."""
    from transformers import LlavaForConditionalGeneration

    model, tok, image = load_base(cfg) if dist.is_main else (None, None, None)
    if not dist.distributed:
        return model, tok, image
    shared = [(model.config, model.generation_config, tok, image) if dist.is_main else None]
    tdist.broadcast_object_list(shared, src=0)
    config, generation, tok, image = shared[0]
    if not dist.is_main:
        with torch.device("meta"):
            model = LlavaForConditionalGeneration._from_config(config, dtype=_weights_dtype(cfg))
        model.generation_config = generation
    return model, tok, image


def build_model(cfg: RecipeConfig, dist: DistInfo) -> TrainModel:
    """The model ready to train, its tokenizer, image settings and step context (module docstring)."""
    from llava15.model.format import num_image_tokens
    from llava15.model.freeze import apply_freeze
    from llava15.model.last_layer_rows import LastLayerRows
    from llava15.model.packed_attention import PACKED_SDPA, use_packed_attention

    stage = cfg.train.stage
    if (stage == "projector+lora") != cfg.lora.enabled:
        raise ValueError(f"train.stage={stage!r} and lora.enabled={cfg.lora.enabled} disagree: LoRA runs use "
                         "train.stage=projector+lora with lora.enabled=true")
    from llava15.model.quantize import check_training_quantize, quantize_for_training

    check_training_quantize(cfg.model.quantize, stage, dist.distributed)  # before the (long) load
    model, tok, image = _load_on_rank0(cfg, dist)
    if cfg.model.quantize != "none":  # QLoRA: the frozen LLM's linear layers stored in nf4/int8 (model.quantize)
        from llava15.train.precision import wants_bf16

        compute = torch.bfloat16 if wants_bf16(cfg, dist) else torch.float32
        say(quantize_for_training(model, cfg.model.quantize, dist.device, compute).describe(), dist.is_main)
    model.config.text_config.use_cache = False
    packed = cfg.data.batching == "pack" and use_packed_attention(model)
    if packed:
        say(f"attention: {PACKED_SDPA} (each packed sample attends to itself only, at its own length's cost)",
            dist.is_main)
    config = model.config
    if cfg.lora.enabled:
        from llava15.model.lora import apply_lora

        model = apply_lora(model, r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout)
    say(f"trainable parameters ({stage}):\n{apply_freeze(model, stage)}", dist.is_main)
    every = cfg.train.checkpoint_every(on_gpu=dist.device.type == "cuda")
    if every:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False},
                                              every_n_layers=every)
    say(f"activation checkpointing: {cfg.train.checkpointing_phrase(every)}"
        f" ({cfg.train.activation_checkpointing})", dist.is_main)
    last_layer = LastLayerRows(model) if cfg.train.last_layer_supervised_only else None
    if last_layer is not None:
        say(last_layer.describe(), dist.is_main)
        last_layer = last_layer if last_layer.enabled else None
    if cfg.train.compile:
        from llava15.train.compile import compile_decoder_layers

        # the last layer's row hooks would break its graph every step
        n = compile_decoder_layers(model, skip_last=last_layer is not None)
        say(f"train.compile: {n} decoder layers of the language model compiled (dynamic shapes)"
            + ("; the last one runs eager, on supervised rows only" if last_layer is not None else ""),
            dist.is_main)
    autocast_dtype, precision = place_model(model, cfg, dist)
    say(f"precision: {precision}", dist.is_main)
    step = StepContext(dist=dist, loss_normalization=cfg.train.loss_normalization,
                       max_grad_norm=cfg.train.max_grad_norm, autocast_dtype=autocast_dtype,
                       image_token_id=int(config.image_token_id), num_image_tokens=num_image_tokens(config),
                       image_size=int(config.vision_config.image_size), text_needs_grad=stage != "projector",
                       last_layer=last_layer)
    return TrainModel(model=model, tokenizer=tok, image=image, step=step, packed_attention=packed)
