"""Assemble a `LlavaForConditionalGeneration` from a pretrained vision tower and a pretrained causal LM.

Contract: `build_llava(vision_tower, llm, projector="mlp2x_gelu", vision_feature_layer=-2,
vision_feature_select_strategy="default", dtype=None, attn_implementation="sdpa")
-> (model, tokenizer, ImageSettings)`.

- `vision_tower`: hub id or folder of any vision encoder `AutoModel` loads (CLIP, SigLIP); given a full
  two-tower model (`CLIPModel`, `SiglipModel`: config has a `vision_config`) only its vision model is
  kept. `llm`: hub id or folder of any `AutoModelForCausalLM` (Llama/Vicuna, Mistral, Qwen2, Phi-3...).
- The LLaVA shell is created on the meta device and the pretrained sub-models are moved in, so the
  weights are loaded once, in `dtype`, never randomly initialised first.
- Projector: `mlp2x_gelu` (LLaVA-1.5) or `linear` (original LLaVA), fresh weights; see
  `model.projector` for how `linear` lives in HF's two-Linear class.
- `llm` is a folder or hub id; a `.gguf` file or a packaged alias is resolved to a folder first by
  `model.gguf.resolve_llm_source` (the trainer does it).
- Tokenizer surgery: `<image>` (+ `<pad>` when missing) is added, the embedding and `lm_head` grow to
  `len(tokenizer)` rounded up to a multiple of 64 (32064 for Vicuna, as llava-hf), and every new row of
  each matrix is set to the mean of that matrix's old rows (the HF conversion's mean, without its
  1e-5·Σ noise: deterministic). `image_token_id` and the pad ids are set in the configs.
- Image settings: size from the vision config, mean/std from the tower's `preprocessor_config.json`
  when present (SigLIP differs from CLIP), else CLIP's; aspect ratio `pad` (LLaVA-1.5 stage 2).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from llava15.data.images import CLIP_MEAN, CLIP_STD, ImageSettings
from llava15.model.format import num_image_tokens
from llava15.model.projector import PROJECTORS, make_projector
from llava15.model.tokenizer import add_image_token

log = logging.getLogger(__name__)

VOCAB_MULTIPLE = 64


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype | str:
    if dtype is None or dtype == "auto":
        return torch.float32 if dtype is None else "auto"
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def load_vision_tower(name: str, dtype: torch.dtype | str | None = None,
                      attn_implementation: str = "sdpa") -> PreTrainedModel:
    """The vision encoder of `name`; the vision half when `name` is a two-tower model such as CLIP."""
    cfg = AutoConfig.from_pretrained(name)
    kwargs: dict[str, Any] = {"dtype": _dtype(dtype), "attn_implementation": attn_implementation}
    model = AutoModel.from_pretrained(name, **kwargs)
    if hasattr(cfg, "vision_config") and hasattr(model, "vision_model"):
        model = model.vision_model  # CLIPModel/SiglipModel hold a CLIPVisionModel/SiglipVisionModel
    if not hasattr(model.config, "patch_size") or not hasattr(model.config, "image_size"):
        raise ValueError(f"{name}: {type(model).__name__} is not a ViT-style vision encoder "
                         "(its config lacks image_size/patch_size)")
    return model


def image_settings_for(vision_tower: str, vision_config: Any) -> ImageSettings:
    """Image size from the vision config; mean/std from the tower's preprocessor config if it has one."""
    mean, std = CLIP_MEAN, CLIP_STD
    f = Path(vision_tower) / "preprocessor_config.json"
    if f.is_file():
        pp = json.loads(f.read_text())
        mean = tuple(pp.get("image_mean", mean))
        std = tuple(pp.get("image_std", std))
    elif not Path(vision_tower).exists():
        try:
            from transformers import AutoImageProcessor

            ip = AutoImageProcessor.from_pretrained(vision_tower)
            mean, std = tuple(ip.image_mean), tuple(ip.image_std)
        except (OSError, ValueError, AttributeError):
            log.warning("%s: no image processor found; using CLIP mean/std", vision_tower)
    return ImageSettings(size=int(vision_config.image_size), mean=mean, std=std)


def resize_embeddings(model: LlavaForConditionalGeneration, new_len: int) -> None:
    """Grow input/output embeddings to `new_len` rounded up to 64; new rows = mean of the old ones."""
    emb = model.get_input_embeddings()
    old = emb.weight.shape[0]
    target = -(-new_len // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    if new_len <= old:
        return
    emb_mean = emb.weight.detach().float().mean(0)
    head = model.get_output_embeddings()
    head_mean = head.weight.detach().float().mean(0) if head is not None else None
    model.resize_token_embeddings(target, mean_resizing=False)
    with torch.no_grad():
        new_emb = model.get_input_embeddings().weight
        new_emb[old:] = emb_mean.to(new_emb.dtype)
        new_head = model.get_output_embeddings()
        if new_head is not None and new_head.weight is not new_emb and head_mean is not None:
            new_head.weight[old:] = head_mean.to(new_head.weight.dtype)
    model.config.text_config.vocab_size = target


def build_llava(
    vision_tower: str,
    llm: str,
    projector: str = "mlp2x_gelu",
    vision_feature_layer: int | list[int] = -2,
    vision_feature_select_strategy: str = "default",
    dtype: torch.dtype | str | None = None,
    attn_implementation: str = "sdpa",
) -> tuple[LlavaForConditionalGeneration, PreTrainedTokenizerBase, ImageSettings]:
    """Assemble LLaVA from a pretrained vision tower and causal LM (see module docstring)."""
    if projector not in PROJECTORS:
        raise ValueError(f"projector {projector!r} unknown; choose one of {sorted(PROJECTORS)}")
    vision = load_vision_tower(vision_tower, dtype, attn_implementation)
    lm = AutoModelForCausalLM.from_pretrained(llm, dtype=_dtype(dtype), attn_implementation=attn_implementation)
    tokenizer = AutoTokenizer.from_pretrained(llm)
    image_token_id = add_image_token(tokenizer)

    text_config = lm.config
    text_config.architectures = [type(lm).__name__]
    config = LlavaConfig(
        vision_config=vision.config,
        text_config=text_config,
        image_token_index=image_token_id,
        projector_hidden_act=PROJECTORS[projector],
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=vision_feature_select_strategy,
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
    )
    config.image_seq_length = num_image_tokens(config)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    param_dtype = next(lm.parameters()).dtype
    model.model.vision_tower = vision
    model.model.language_model = lm.get_decoder()
    model.lm_head = lm.get_output_embeddings()
    model.model.multi_modal_projector = make_projector(config, param_dtype)
    model.model.multi_modal_projector.to(next(lm.parameters()).device)
    leftovers = [n for n, p in [*model.named_parameters(), *model.named_buffers()] if p.is_meta]
    if leftovers:
        raise RuntimeError(f"build_llava: modules left on the meta device: {leftovers[:5]}")
    if lm.generation_config is not None:
        model.generation_config = lm.generation_config
    model.set_attn_implementation(attn_implementation)

    resize_embeddings(model, len(tokenizer))
    # Only now is the pad id inside the (resized) vocabulary.
    model.config.text_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    del lm
    image = image_settings_for(vision_tower, vision.config)
    log.info("built LLaVA: %s + %s, projector %s, image token %d, vocab %d, %d image tokens",
             vision_tower, llm, projector, image_token_id, model.config.text_config.vocab_size,
             config.image_seq_length)
    return model, tokenizer, image

