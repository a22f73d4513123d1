"""Save and load llava15 checkpoints: self-describing folders in the canonical HF 4.x layout.

Contract:
- `save_checkpoint(model, tokenizer, out_dir, template, image, recipe=None)` writes a folder that plain
  `LlavaForConditionalGeneration.from_pretrained` + `AutoProcessor.from_pretrained` and vLLM load:
  safetensors weights in the llava-hf key layout (`language_model.model.*`,
  `language_model.lm_head.weight`, `multi_modal_projector.linear_{1,2}.*`, `vision_tower.vision_model.*`;
  hf_llava.md §2, §6) written by us (5.x `save_pretrained` would write the flattened vision keys),
  `config.json` with `text_config.architectures`, `generation_config.json`, the tokenizer (with
  `tokenizer.model`), `preprocessor_config.json` (a `LlavaImageProcessor`: `CLIPImageProcessor` has no
  `do_pad`, and `do_pad` is LLaVA-1.5's expand-to-square), `processor_config.json` (llava-hf's flat
  form, `num_additional_image_tokens: 1` for CLIP), `chat_template.jinja`, and `llava15.json`: template,
  image settings, recipe, package version. Those are what `load_bundle` reads back.
- `load_bundle(path_or_id, dtype=None, device=None) -> LlavaBundle`. The template and image settings
  come from `llava15.json`, never from the folder name. A folder without it (llava-hf hub repos) gets
  template `vicuna_v1` (what LLaVA-1.5 was trained with) and image settings from
  `preprocessor_config.json`, with a logged warning. An original-layout folder (`mm_vision_tower` in
  `config.json`, no `text_config`) is converted to a temporary HF folder first. Missing or unexpected
  weight keys are an error. Legacy `.bin` weights are read only through `read_state_dict` below.
- `read_state_dict(folder)`: every weight file of a folder (safetensors, or `.bin` with
  `torch.load(weights_only=True)` only; a pickle that wants to run code raises `UnsafeCheckpointError`).
"""

from __future__ import annotations

import copy
import json
import logging
import re
import tempfile
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from transformers import LlavaForConditionalGeneration, PreTrainedTokenizerBase

from llava15.model.tokenizer import IMAGE_TOKEN, chat_template_for, copy_sentencepiece_model

log = logging.getLogger(__name__)

META_FILE = "llava15.json"
DEFAULT_TEMPLATE = "vicuna_v1"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_SHARD_BYTES = 5 * 1024**3
# Vision towers whose transformers-4.x class nested its weights under `vision_model.` (5.x flattened it).
NESTED_VISION_TYPES = {"clip_vision_model", "siglip_vision_model", "siglip2_vision_model"}


class UnsafeCheckpointError(RuntimeError):
    """A legacy `.bin` checkpoint holds objects that only an unsafe pickle load could build."""


@dataclass
class ImageSettings:
    """How images are turned into pixels for this checkpoint."""

    size: int = 336
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    aspect_ratio: str = "pad"  # pad (expand2square, LLaVA-1.5 stage 2) | square (resize+crop) | resize


@dataclass
class LlavaBundle:
    """A loaded checkpoint: the model and everything needed to prompt it the way it was trained."""

    model: LlavaForConditionalGeneration
    tokenizer: PreTrainedTokenizerBase
    template: str
    image: ImageSettings
    image_token_id: int
    num_image_tokens: int
    meta: dict = field(default_factory=dict)


def num_image_tokens(config: Any) -> int:
    """Placeholder tokens per image: patches, plus the CLS token for the `full` strategy."""
    vc = config.vision_config
    patches = (vc.image_size // vc.patch_size) ** 2
    return patches + (1 if config.vision_feature_select_strategy == "full" else 0)


def _package_version() -> str:
    try:
        return metadata.version("llava15")
    except metadata.PackageNotFoundError:
        return "unknown"


# ----------------------------------------------------------------------------------------- saving


def canonical_vision_key(key: str, vision_type: str) -> str:
    """`vision_tower.` + the tower's own key, nested under `vision_model.` as transformers 4.x had it."""
    if vision_type in NESTED_VISION_TYPES and not key.startswith("vision_model."):
        key = "vision_model." + key
    return "vision_tower." + key


def canonical_state_dict(model: LlavaForConditionalGeneration) -> dict[str, torch.Tensor]:
    """The model's weights under llava-hf's 4.x key names (hf_llava.md §2.2 first row fixed)."""
    vision_type = model.config.vision_config.model_type
    skip_lm_head = bool(model.config.tie_word_embeddings)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("model.vision_tower."):
            new = canonical_vision_key(name[len("model.vision_tower."):], vision_type)
        elif name.startswith("model.multi_modal_projector."):
            new = name[len("model."):]
        elif name.startswith("model.language_model."):
            new = "language_model.model." + name[len("model.language_model."):]
        elif name == "lm_head.weight":
            if skip_lm_head:
                continue
            new = "language_model.lm_head.weight"
        else:
            raise ValueError(f"save_checkpoint: parameter {name!r} is outside the LLaVA module tree "
                             "(vision_tower / multi_modal_projector / language_model / lm_head)")
        out[new] = tensor
    return out


def write_safetensors(tensors: dict[str, torch.Tensor], out_dir: Path, max_shard_bytes: int = MAX_SHARD_BYTES,
                      prefix: str = "model") -> list[str]:
    """Write `tensors` as `model.safetensors`, or shards plus an index when larger than a shard."""
    from safetensors.torch import save_file

    # Shared storage (tied weights) and views are refused by safetensors: give each its own memory.
    prepared = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in prepared.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += nbytes
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(out_dir / f"{prefix}.safetensors"), metadata=meta)
        return [f"{prefix}.safetensors"]
    names = [f"{prefix}-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, shard in zip(names, shards):
        save_file(shard, str(out_dir / name), metadata=meta)
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in prepared.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / f"{prefix}.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return names


def _image_processor_dict(image: ImageSettings) -> dict:
    s = int(image.size)
    crop = image.aspect_ratio != "resize"
    return {
        "image_processor_type": "LlavaImageProcessor",
        "processor_class": "LlavaProcessor",
        "do_convert_rgb": True,
        "do_pad": image.aspect_ratio == "pad",
        "do_resize": True,
        "size": {"shortest_edge": s} if crop else {"height": s, "width": s},
        "resample": 3,
        "do_center_crop": crop,
        "crop_size": {"height": s, "width": s},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(image.mean),
        "image_std": list(image.std),
    }


def _text_architecture(text_config: Any) -> list[str]:
    if getattr(text_config, "architectures", None):
        return list(text_config.architectures)
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(text_config.model_type)
    if arch is None:
        raise ValueError(f"no causal-LM class known for text model_type {text_config.model_type!r}")
    return [arch]


def save_checkpoint(
    model: LlavaForConditionalGeneration,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    template: str,
    image: ImageSettings,
    recipe: dict | None = None,
    extra_meta: dict | None = None,
) -> Path:
    """Write a self-describing checkpoint in the canonical HF 4.x layout (see module docstring)."""
    if not isinstance(model, LlavaForConditionalGeneration):
        raise TypeError(f"save_checkpoint needs a LlavaForConditionalGeneration, got {type(model).__name__}"
                        " (merge LoRA adapters first: llava15.model.lora.merge_lora)")
    return write_checkpoint(canonical_state_dict(model), model.config, model.generation_config, tokenizer,
                            out_dir, template, image, recipe=recipe, extra_meta=extra_meta)


def write_checkpoint(
    tensors: dict[str, torch.Tensor],
    config: Any,
    generation_config: Any,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    template: str,
    image: ImageSettings,
    recipe: dict | None = None,
    extra_meta: dict | None = None,
) -> Path:
    """`save_checkpoint` for weights already under canonical names (used by conversion too)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("model*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        old.unlink()  # never leave shards of an earlier, larger save behind
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
    if template != "hf_chat_template":  # that one *is* the tokenizer's own, saved just above
        try:
            (out / "chat_template.jinja").write_text(chat_template_for(template))
        except ValueError as exc:  # a custom template still saves; HF chat users need --chat-template
            log.warning("%s: %s; chat_template.jinja not written", out, exc)
    (out / "preprocessor_config.json").write_text(json.dumps(_image_processor_dict(image), indent=2))
    vision_type = config.vision_config.model_type
    processor = {
        "processor_class": "LlavaProcessor",
        "image_token": IMAGE_TOKEN,
        "patch_size": int(config.vision_config.patch_size),
        "vision_feature_select_strategy": config.vision_feature_select_strategy,
        # CLIP prepends a CLS token that "default" drops; SigLIP has none (hf_llava.md pitfall 2).
        "num_additional_image_tokens": 1 if vision_type.startswith("clip") else 0,
    }
    (out / "processor_config.json").write_text(json.dumps(processor, indent=2))

    meta = {
        "format": "llava15",
        "format_version": 1,
        "llava15_version": _package_version(),
        "template": template,
        "image": {**asdict(image), "mean": list(image.mean), "std": list(image.std)},
        "image_token": IMAGE_TOKEN,
        "image_token_id": int(config.image_token_id),
        "num_image_tokens": num_image_tokens(config),
        "recipe": recipe,
        # hf_llava.md §9.3: AutoProcessor/vLLM tokenize "<image>\n" without the extra "▁" the original
        # tokenizer_image_token puts after each image; llava15's own engine builds the original ids.
        "note": "HF processors tokenize the text after <image> jointly with it (one token fewer than the "
                "original LLaVA prompt ids); llava15's engine reproduces the original ids.",
    }
    meta.update(extra_meta or {})
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return out


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


# ---------------------------------------------------------------------------------------- loading


def read_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder's weight files: safetensors first, else legacy `.bin` (safely)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        files = sorted(p for p in folder.glob("*.bin") if p.name != "training_args.bin")
    if not files:
        raise FileNotFoundError(f"no *.safetensors or *.bin weight files in {folder}")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        part = load_file(str(f)) if f.suffix == ".safetensors" else load_bin(f)
        dup = set(part) & set(out)
        if dup:
            raise ValueError(f"{f}: keys already read from another weight file: {sorted(dup)[:5]}")
        out.update(part)
    return out


def load_bin(path: str | Path) -> dict[str, torch.Tensor]:
    """`torch.load(weights_only=True)`: tensors and plain containers only; never executes a pickle."""
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError (wrapped differently across versions)
        raise UnsafeCheckpointError(
            f"{path}: refusing to load this .bin: it is not a plain tensor pickle and would need "
            f"loading without weights_only=True (the full unpickler), which can execute arbitrary code. Convert it to safetensors "
            f"with a trusted tool first. ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UnsafeCheckpointError(f"{path}: expected a dict of tensors, got {type(sd).__name__}")
    return sd


def is_original_layout(config: dict) -> bool:
    """Original LLaVA layout: vision tower referenced by `mm_vision_tower`, no nested text config."""
    return "mm_vision_tower" in config and "text_config" not in config


def _resolve_folder(path_or_id: str | Path) -> Path:
    path = Path(path_or_id)
    if path.is_dir():
        return path
    if re.fullmatch(r"[\w.-]+/[\w.-]+", str(path_or_id)) is None:
        raise FileNotFoundError(f"{path_or_id}: not a folder and not a hub id of the form owner/name")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(path_or_id)))


def _settings_from_preprocessor(folder: Path, default_size: int) -> ImageSettings:
    f = folder / "preprocessor_config.json"
    if not f.exists():
        return ImageSettings(size=default_size)
    pp = json.loads(f.read_text())
    crop = pp.get("crop_size") or {}
    size = crop.get("height") or (pp.get("size") or {}).get("shortest_edge") or default_size
    if pp.get("do_pad"):
        aspect = "pad"
    elif pp.get("do_center_crop", True):
        aspect = "square"
    else:
        aspect = "resize"
    return ImageSettings(size=int(size), mean=tuple(pp.get("image_mean", CLIP_MEAN)),
                         std=tuple(pp.get("image_std", CLIP_STD)), aspect_ratio=aspect)


def load_bundle(path_or_id: str | Path, dtype: torch.dtype | str | None = None,
                device: str | torch.device | None = None) -> LlavaBundle:
    """Load a llava15, llava-hf or original-layout LLaVA checkpoint (see module docstring)."""
    from transformers import AutoTokenizer

    folder = _resolve_folder(path_or_id)
    config = json.loads((folder / "config.json").read_text())
    if is_original_layout(config):
        from llava15.model.convert import to_hf

        with tempfile.TemporaryDirectory(prefix="llava15-convert-") as tmp:
            log.info("%s is in the original LLaVA layout; converting to the HF layout in %s", folder, tmp)
            to_hf(folder, Path(tmp) / "hf")
            bundle = load_bundle(Path(tmp) / "hf", dtype=dtype, device=device)
            bundle.meta["converted_from"] = str(folder)
            return bundle

    kwargs: dict[str, Any] = {"output_loading_info": True}
    if dtype is not None:
        kwargs["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
    model, info = LlavaForConditionalGeneration.from_pretrained(folder, **kwargs)
    bad = {k: sorted(v)[:10] for k, v in info.items() if k in ("missing_keys", "unexpected_keys") and v}
    if bad:
        raise ValueError(f"{folder}: weights do not match LlavaForConditionalGeneration: {bad}")
    tokenizer = AutoTokenizer.from_pretrained(folder)

    meta_file = folder / META_FILE
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        template = meta["template"]
        im = meta["image"]
        image = ImageSettings(size=int(im["size"]), mean=tuple(im["mean"]), std=tuple(im["std"]),
                              aspect_ratio=im["aspect_ratio"])
    else:
        meta = {}
        template = DEFAULT_TEMPLATE
        image = _settings_from_preprocessor(folder, model.config.vision_config.image_size)
        log.warning("%s has no %s: using template %r (LLaVA-1.5's) and image settings %s from "
                    "preprocessor_config.json; pass them explicitly if this model was trained otherwise",
                    folder, META_FILE, template, image)

    image_token_id = int(model.config.image_token_id)
    tok_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if tok_id != image_token_id:
        raise ValueError(f"{folder}: tokenizer maps {IMAGE_TOKEN!r} to {tok_id} but config.json "
                         f"image_token_index is {image_token_id}")
    if device is not None:
        model.to(device)
    model.eval()
    return LlavaBundle(model=model, tokenizer=tokenizer, template=template, image=image,
                       image_token_id=image_token_id, num_image_tokens=num_image_tokens(model.config),
                       meta=meta)
