"""Write a self-describing llava15 checkpoint that plain transformers, vLLM and SGLang load.

Contract: `save_checkpoint(model, tokenizer, out_dir, template, image, recipe=None)` writes
- the weights under canonical names (`model.format`; safetensors, sharded above 5 GB) — written by us
  because transformers 5's `save_pretrained` would write the flattened vision keys older readers miss;
- `config.json` with `text_config.architectures` and the legacy rope fields, `generation_config.json`
  with the tokenizer's special ids;
- the tokenizer (with its SentencePiece `tokenizer.model` when it has one) and `chat_template.jinja`
  rendering our template table;
- `preprocessor_config.json` (`ImageSettings.to_processor_config`) and `processor_config.json`
  (llava-hf's flat form: `num_additional_image_tokens` 1 for CLIP's CLS token, 0 for SigLIP);
- `llava15.json` (`CheckpointMeta`): template, image settings, image token, recipe, version.
`write_checkpoint(tensors, config, ...)` does the same for weights already under canonical names (the
layout conversion and the trainer's final save, which stream gathered shards).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import LlavaForConditionalGeneration, PreTrainedTokenizerBase

from llava15.data.conversation import IMAGE_TOKEN
from llava15.data.images import ImageSettings
from llava15.model.format import (
    CheckpointMeta,
    canonical_state_dict,
    has_cls_token,
    num_image_tokens,
    remove_weight_files,
    write_meta,
    write_safetensors,
)
from llava15.model.tokenizer import chat_template_for, copy_sentencepiece_model

log = logging.getLogger(__name__)
TOKENIZER_OWN_TEMPLATE = "hf_chat_template"  # the template that *is* the tokenizer's own chat template


def save_checkpoint(model: LlavaForConditionalGeneration, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path,
                    template: str, image: ImageSettings, recipe: dict | None = None,
                    meta: CheckpointMeta | None = None) -> Path:
    """Write a self-describing checkpoint (see module docstring)."""
    if not isinstance(model, LlavaForConditionalGeneration):
        raise TypeError(f"save_checkpoint needs a LlavaForConditionalGeneration, got {type(model).__name__}"
                        " (merge LoRA adapters first: llava15.model.lora.merge_lora)")
    return write_checkpoint(canonical_state_dict(model), model.config, model.generation_config, tokenizer,
                            out_dir, template, image, recipe=recipe, meta=meta)


def write_checkpoint(tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]], config: Any,
                     generation_config: Any, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path,
                     template: str, image: ImageSettings, recipe: dict | None = None,
                     meta: CheckpointMeta | None = None) -> Path:
    """`save_checkpoint` for weights already under canonical names (a mapping or a stream of pairs)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_weight_files(out)
    write_safetensors(tensors, out)

    config = copy.deepcopy(config)
    config.text_config.architectures = _text_architecture(config.text_config)
    config.architectures = ["LlavaForConditionalGeneration"]
    config.save_pretrained(out)
    _add_legacy_rope_fields(out / "config.json")
    gen = copy.deepcopy(generation_config)
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    gen.save_pretrained(out)

    tokenizer.save_pretrained(out)
    copy_sentencepiece_model(tokenizer, out)
    if template != TOKENIZER_OWN_TEMPLATE:  # that one was saved with the tokenizer just above
        try:
            (out / "chat_template.jinja").write_text(chat_template_for(template))
        except ValueError as exc:  # a custom template still saves; HF chat users need --chat-template
            log.warning("%s: %s; chat_template.jinja not written", out, exc)
    (out / "preprocessor_config.json").write_text(json.dumps(image.to_processor_config(), indent=2))
    processor = {
        "processor_class": "LlavaProcessor",
        "image_token": IMAGE_TOKEN,
        "patch_size": int(config.vision_config.patch_size),
        "vision_feature_select_strategy": config.vision_feature_select_strategy,
        # CLIP prepends a CLS token that "default" drops; SigLIP has none.
        "num_additional_image_tokens": 1 if has_cls_token(config.vision_config) else 0,
    }
    (out / "processor_config.json").write_text(json.dumps(processor, indent=2))

    meta = copy.copy(meta) if meta is not None else CheckpointMeta()
    meta.kind, meta.template, meta.image = "llava15", template, image
    meta.recipe = recipe if recipe is not None else meta.recipe
    meta.image_token_id, meta.num_image_tokens = int(config.image_token_id), num_image_tokens(config)
    write_meta(out, meta)
    return out


def _text_architecture(text_config: Any) -> list[str]:
    if getattr(text_config, "architectures", None):
        return list(text_config.architectures)
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(text_config.model_type)
    if arch is None:
        raise ValueError(f"no causal-LM class known for text model_type {text_config.model_type!r}")
    return [arch]


def _add_legacy_rope_fields(config_file: Path) -> None:
    """Also write `rope_theta` (+ `rope_scaling`) in text_config: transformers 4.x and older vLLM read
    those, not 5.x's `rope_parameters`, and would silently fall back to theta 10000."""
    cfg = json.loads(config_file.read_text())
    text = cfg.get("text_config", {})
    rope = text.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope and "rope_theta" not in text:
        text["rope_theta"] = rope["rope_theta"]
        if rope.get("rope_type", "default") != "default" and "rope_scaling" not in text:
            text["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
        config_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
