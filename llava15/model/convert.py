"""Original LLaVA layout ⇄ llava15/HF layout.

Contract:
- `to_hf(src, dst)`: an original-layout folder (haotian-liu `LlavaLlamaForCausalLM`: `mm_vision_tower`
  in a flat Llama `config.json`, keys `model.layers…`, `lm_head.weight`, `model.mm_projector.{0,2}.*`,
  optional `model.vision_tower.vision_tower.vision_model.*`, vocab without `<image>`; see
  docs/conversion.md) → a llava15 checkpoint (`save_checkpoint` layout). Missing vision weights are loaded from
  `mm_vision_tower` (absolute path, path relative to `src`, or hub id). `<image>` (+ `<pad>` when the
  tokenizer has none) is added with mean-initialised rows, as `build_llava` does. What the HF config
  cannot hold (the original config, vocab size, whether vision weights were present) goes to
  `llava15.json` → `source`, so that `to_original` can undo it exactly.
- `to_original(src, dst, vision_tower_ref=None, include_vision_tower=None, safetensors=True)`: the
  reverse. Added vocabulary rows are removed; original→HF→original is bit-exact for every tensor. A
  model with no recorded tower reference gets its tower written to `dst/vision_tower/` and referenced
  by absolute path.
- Layouts are told apart by fields (`mm_vision_tower` and no `text_config` = original),
  never by `model_type`. Keys are renamed by anchored regex rules; every source key must match exactly
  one rule and the result must be exactly the target model's key set, else `ConversionError` lists the
  leftovers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from llava15.config import DEFAULT_TEMPLATE
from llava15.data.images import ORIGINAL_DEFAULT_ASPECT_RATIO, ImageSettings
from llava15.model.format import (
    TO_CANONICAL,
    CheckpointMeta,
    ConversionError,
    canonical_state_dict,
    canonical_vision_key,
    is_original_layout,
    read_meta,
    read_state_dict,
    rename_keys,
    write_safetensors,
)
from llava15.model.projector import FROM_ORIGINAL, identity_linear_2, is_linear, to_original_names
from llava15.model.save import write_checkpoint
from llava15.model.tokenizer import SP_MODEL_FILE, add_image_token, vicuna_tokenizer_config

__all__ = ["ConversionError", "to_hf", "to_original"]

DROP = None
# original → canonical HF (llava-hf 4.x names); the projector's rules live with the projector
ORIGINAL_TO_HF: list[tuple[str, str | None]] = [
    *FROM_ORIGINAL,
    (r"^model\.vision_tower\.vision_tower\.(vision_model\..+)$", r"vision_tower.\1"),
    (r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$", DROP),  # transformers 4.31 buffers
    (r"^model\.(embed_tokens|layers|norm)\.(.+)$", r"language_model.model.\1.\2"),
    (r"^lm_head\.weight$", "language_model.lm_head.weight"),
]
# canonical HF → original (projector excluded: `projector.to_original_names`)
HF_TO_ORIGINAL: list[tuple[str, str | None]] = [
    (r"^vision_tower\.(vision_model\..+)$", r"model.vision_tower.vision_tower.\1"),
    (r"^language_model\.model\.(.+)$", r"model.\1"),
    (r"^language_model\.lm_head\.weight$", "lm_head.weight"),
]
TEXT_MODEL_TYPES = {"llava": "llama", "llava_llama": "llama", "llava_mistral": "mistral"}
ORIGINAL_MODEL_TYPES = {"llama": ("llava_llama", "LlavaLlamaForCausalLM"),
                        "mistral": ("llava_mistral", "LlavaMistralForCausalLM")}
SELECT_FEATURE = {"patch": "default", "cls_patch": "full"}
# Fields of an original config that belong to LLaVA, not to the text model.
LLAVA_FIELDS = {"use_mm_proj", "image_aspect_ratio", "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter",
                "freeze_mm_vision_resampler", "tune_mm_vision_resampler", "unfreeze_mm_vision_tower",
                "tokenizer_model_max_length", "tokenizer_padding_side", "image_grid_pinpoints",
                "architectures", "model_type", "transformers_version", "_name_or_path", "max_length"}


# Generic 5.x config fields the original (transformers 4.31/4.37) config never carried.
_HF_ONLY_FIELDS = {"architectures", "_name_or_path", "transformers_version", "chunk_size_feed_forward",
                   "id2label", "label2id", "is_encoder_decoder", "output_attentions", "output_hidden_states",
                   "problem_type", "return_dict", "rope_parameters", "dtype"}


def _check_keys(got: set[str], expected: set[str], what: str) -> None:
    missing, extra = sorted(expected - got), sorted(got - expected)
    if missing or extra:
        raise ConversionError(f"{what}: missing {len(missing)} keys {missing[:6]}, "
                              f"left over {len(extra)} keys {extra[:6]}")


def expected_keys(config: Any) -> set[str]:
    """Canonical key names of a LlavaForConditionalGeneration with this config (built on meta)."""
    from transformers import LlavaForConditionalGeneration

    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    return set(canonical_state_dict(model))


def _resolve_tower(ref: str, src: Path) -> str:
    for cand in (Path(ref), src / ref):
        if cand.is_dir():
            return str(cand)
    return ref  # a hub id


def _mean_rows(t: torch.Tensor, new_rows: int) -> torch.Tensor:
    mean = t.float().mean(0, keepdim=True).to(t.dtype)
    return torch.cat([t, mean.expand(new_rows - t.shape[0], -1)], 0)


def to_hf(src: str | Path, dst: str | Path, vision_tower: str | None = None) -> Path:
    """Convert an original-layout LLaVA folder to a llava15 checkpoint (see module docstring).

    `vision_tower` overrides the config's `mm_vision_tower` (e.g. a local copy of the CLIP model)."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig, LlavaConfig

    from llava15.model.build import VOCAB_MULTIPLE, image_settings_for, load_vision_tower

    src, dst = Path(src), Path(dst)
    orig = json.loads((src / "config.json").read_text())
    if not is_original_layout(orig):
        raise ConversionError(f"{src}/config.json is not the original LLaVA layout (needs mm_vision_tower "
                              "and no text_config)")
    proj_type = orig.get("mm_projector_type", "linear")
    if proj_type not in ("mlp2x_gelu", "linear"):
        raise ConversionError(f"{src}: mm_projector_type {proj_type!r} unsupported (mlp2x_gelu, linear)")
    if orig.get("mm_use_im_start_end") or orig.get("mm_patch_merge_type", "flat") != "flat":
        raise ConversionError(f"{src}: mm_use_im_start_end / non-flat mm_patch_merge_type are not LLaVA-1.5")
    text_type = TEXT_MODEL_TYPES.get(orig.get("model_type", ""))
    if text_type is None:
        raise ConversionError(f"{src}: model_type {orig.get('model_type')!r} unknown; known "
                              f"{sorted(TEXT_MODEL_TYPES)}")

    tensors = rename_keys(read_state_dict(src), ORIGINAL_TO_HF, f"{src} (original → HF)")
    has_vision = any(k.startswith("vision_tower.") for k in tensors)
    tower_ref = vision_tower or orig["mm_vision_tower"]
    tower_path = _resolve_tower(tower_ref, src)
    vision = load_vision_tower(tower_path, dtype=None)
    if not has_vision:
        vtype = vision.config.model_type
        dtype = tensors["language_model.model.embed_tokens.weight"].dtype
        for k, v in vision.state_dict().items():
            tensors[canonical_vision_key(k, vtype)] = v.to(dtype)
    if proj_type == "linear":
        w = tensors["multi_modal_projector.linear_1.weight"]
        tensors.update({f"multi_modal_projector.linear_2.{k}": v
                        for k, v in identity_linear_2(w.shape[0], w.dtype).items()})

    tokenizer = AutoTokenizer.from_pretrained(src)
    image_token_id = add_image_token(tokenizer)
    vocab = int(orig["vocab_size"])
    target = max(vocab, -(-len(tokenizer) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE)
    for key in ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"):
        if key in tensors:
            if tensors[key].shape[0] != vocab:
                raise ConversionError(f"{src}: {key} has {tensors[key].shape[0]} rows, config vocab_size {vocab}")
            tensors[key] = _mean_rows(tensors[key], target)

    text_fields = {k: v for k, v in orig.items() if not k.startswith("mm_") and k not in LLAVA_FIELDS}
    text_fields.update(vocab_size=target, pad_token_id=tokenizer.pad_token_id)
    text_config = AutoConfig.for_model(text_type, **text_fields)
    config = LlavaConfig(
        vision_config=vision.config, text_config=text_config, image_token_index=image_token_id,
        projector_hidden_act="gelu" if proj_type == "mlp2x_gelu" else "linear",
        vision_feature_layer=orig.get("mm_vision_select_layer", -2),
        vision_feature_select_strategy=SELECT_FEATURE[orig.get("mm_vision_select_feature", "patch")],
        tie_word_embeddings=bool(orig.get("tie_word_embeddings", False)),
    )
    _check_keys(set(tensors), expected_keys(config), f"{src} → HF")
    generation = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id)
    base = image_settings_for(tower_path, vision.config)
    image = ImageSettings(size=base.size, mean=base.mean, std=base.std,
                          aspect_ratio=orig.get("image_aspect_ratio", ORIGINAL_DEFAULT_ASPECT_RATIO))
    source = {"layout": "original", "config": orig, "vocab_size": vocab, "mm_vision_tower": orig["mm_vision_tower"],
              "vision_weights_included": has_vision}
    # the original code base trains LLaVA-1.5 with vicuna_v1 (its `v1` conversation)
    return write_checkpoint(tensors, config, generation, tokenizer, dst, DEFAULT_TEMPLATE, image,
                            meta=CheckpointMeta(source=source))


def _write_tower(config: Any, tensors: dict[str, torch.Tensor], out: Path) -> None:
    """The vision tower as a standalone 4.x-layout vision-model folder (`vision_model.*` keys)."""
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    write_safetensors({k[len("vision_tower."):]: v for k, v in tensors.items()}, out)


def to_original(src: str | Path, dst: str | Path, vision_tower_ref: str | None = None,
                include_vision_tower: bool | None = None, safetensors: bool = True) -> Path:
    """Convert a llava15/HF checkpoint to the original LLaVA layout (see module docstring)."""
    from transformers import AutoConfig, AutoTokenizer

    src, dst = Path(src), Path(dst)
    cfg_dict = json.loads((src / "config.json").read_text())
    if is_original_layout(cfg_dict) or "text_config" not in cfg_dict:
        raise ConversionError(f"{src}/config.json is not an HF LLaVA config (no text_config)")
    config = AutoConfig.from_pretrained(src)
    meta = read_meta(src) or CheckpointMeta()
    source = meta.source or {}
    text = config.text_config
    if text.model_type not in ORIGINAL_MODEL_TYPES:
        raise ConversionError(f"{src}: text model {text.model_type!r} has no original LLaVA class "
                              f"(known: {sorted(ORIGINAL_MODEL_TYPES)})")

    tensors = rename_keys(read_state_dict(src), TO_CANONICAL, f"{src} (layout normalisation)")
    vtype = config.vision_config.model_type
    tensors = {(canonical_vision_key(k[len("vision_tower."):], vtype) if k.startswith("vision_tower.") else k): v
               for k, v in tensors.items()}
    if config.tie_word_embeddings and "language_model.lm_head.weight" not in tensors:
        tensors["language_model.lm_head.weight"] = tensors["language_model.model.embed_tokens.weight"]
    _check_keys(set(tensors), expected_keys(config) | {"language_model.lm_head.weight"}, f"{src} (HF)")

    linear = is_linear(config)
    if not linear and config.projector_hidden_act != "gelu":
        raise ConversionError(f"{src}: projector_hidden_act {config.projector_hidden_act!r} has no "
                              "original mm_projector_type (gelu → mlp2x_gelu, linear → linear)")

    vocab = int(source.get("vocab_size") or config.image_token_id)
    tokenizer = AutoTokenizer.from_pretrained(src)
    extra = {t: i for t, i in tokenizer.get_vocab().items() if i >= vocab}
    if set(extra) - {"<image>", "<pad>"}:
        raise ConversionError(f"{src}: tokens at ids ≥ {vocab} other than <image>/<pad> would be lost: "
                              f"{sorted(set(extra) - {'<image>', '<pad>'})[:8]}")
    for key in ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"):
        tensors[key] = tensors[key][:vocab].clone()

    tower_ref = vision_tower_ref or source.get("mm_vision_tower")
    if include_vision_tower is None:
        include_vision_tower = bool(source.get("vision_weights_included", tower_ref is None))
    vision = {k: tensors.pop(k) for k in list(tensors) if k.startswith("vision_tower.")}
    dst.mkdir(parents=True, exist_ok=True)
    if tower_ref is None:  # nothing to point at: ship the tower next to the weights
        _write_tower(config.vision_config, vision, dst / "vision_tower")
        tower_ref = str((dst / "vision_tower").resolve())
    if include_vision_tower:
        tensors.update(vision)
    projector = {k: tensors.pop(k) for k in list(tensors) if k.startswith("multi_modal_projector.")}
    out = rename_keys(tensors, HF_TO_ORIGINAL, f"{src} (HF → original)")
    out.update(to_original_names(projector, linear, str(src)))
    for old in list(dst.glob("model*.safetensors")) + list(dst.glob("pytorch_model*.bin")):
        old.unlink()
    if safetensors:
        write_safetensors(out, dst)
    else:
        torch.save({k: v.contiguous() for k, v in out.items()}, dst / "pytorch_model.bin")

    (dst / "config.json").write_text(json.dumps(_original_config(config, meta, vocab, tower_ref, linear),
                                                indent=2, sort_keys=True) + "\n")
    _write_original_tokenizer(tokenizer, src, dst)
    if (src / "generation_config.json").exists():
        gen = json.loads((src / "generation_config.json").read_text())
        if gen.get("pad_token_id") is not None and gen["pad_token_id"] >= vocab:
            gen["pad_token_id"] = 0  # Vicuna/LLaVA: pad = unk
        (dst / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    return dst


def _original_config(config: Any, meta: CheckpointMeta, vocab: int, tower_ref: str, linear: bool) -> dict:
    source = meta.source or {}
    if source.get("config"):
        out = dict(source["config"])
    else:
        text = config.text_config.to_dict()
        out = {k: v for k, v in text.items() if k not in _HF_ONLY_FIELDS}
        # transformers 4.x (the original code's) names: torch_dtype, rope_theta, rope_scaling
        out["torch_dtype"] = text.get("dtype") or "float16"
        rope = text.get("rope_parameters") or {}
        out.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
        if rope.get("rope_type", "default") != "default":
            out.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
        mtype, arch = ORIGINAL_MODEL_TYPES[config.text_config.model_type]
        aspect = meta.image.aspect_ratio
        layer = config.vision_feature_layer
        n_layers = 1 if isinstance(layer, int) else len(layer)
        out.update(
            model_type=mtype, architectures=[arch], use_mm_proj=True, mm_use_im_start_end=False,
            mm_use_im_patch_token=False, mm_patch_merge_type="flat", mm_vision_select_layer=layer,
            mm_hidden_size=config.vision_config.hidden_size * n_layers,
            mm_vision_select_feature="patch" if config.vision_feature_select_strategy == "default"
            else "cls_patch",
            image_aspect_ratio="pad" if aspect == "pad" else "square",
            tokenizer_padding_side="right",
            pad_token_id=0 if (out.get("pad_token_id") or 0) >= vocab else out["pad_token_id"],
        )
    out["mm_projector_type"] = "linear" if linear else "mlp2x_gelu"
    out["mm_vision_tower"] = tower_ref
    out["vocab_size"] = vocab
    return out


def _write_original_tokenizer(tokenizer: Any, src: Path, dst: Path) -> None:
    """The original code loads the slow SentencePiece tokenizer: tokenizer.model + Vicuna's config."""
    sp = src / SP_MODEL_FILE
    if not sp.exists():
        raise ConversionError(f"{src}: no {SP_MODEL_FILE}; the original layout needs a SentencePiece tokenizer")
    shutil.copyfile(sp, dst / SP_MODEL_FILE)
    (dst / "tokenizer_config.json").write_text(json.dumps(vicuna_tokenizer_config(int(tokenizer.model_max_length)),
                                                          indent=2) + "\n")
    for stale in ("tokenizer.json", "special_tokens_map.json", "added_tokens.json"):
        if (dst / stale).exists():
            (dst / stale).unlink()


def run_convert(args: Any) -> int:
    """`llava15 convert --to hf|original SRC DST [--vision-tower X]`."""
    if args.to == "hf":
        out = to_hf(args.src, args.dst, vision_tower=args.vision_tower)
    else:
        out = to_original(args.src, args.dst, vision_tower_ref=args.vision_tower)
    print(f"wrote {args.to} checkpoint to {out}")
    return 0
