"""The checkpoint format: what a llava15 folder holds, under which names, in which files.

Contract:
- `CheckpointMeta` is `llava15.json`, the file that makes a checkpoint self-describing: the template it
  was trained with, its `ImageSettings`, the image token, the recipe, and provenance (`source` for a
  converted original checkpoint, `merged_from` for a merged LoRA run, `base` for a LoRA adapter
  folder). `read_meta(folder) -> CheckpointMeta | None` and `write_meta(folder, meta)` are the only
  readers and writers of that file; keys this version does not know are kept in `extra`.
- Canonical key names are llava-hf's transformers-4.x layout (`language_model.model.*`,
  `language_model.lm_head.weight`, `multi_modal_projector.linear_{1,2}.*`, `vision_tower.vision_model.*`):
  what transformers 4 and 5, vLLM and SGLang all load. `canonical_state_dict(model)`
  renames a `LlavaForConditionalGeneration`'s own (5.x) names; `TO_CANONICAL` normalises any layout
  transformers reads.
- Weight files: `write_safetensors(tensors, folder)` writes `model.safetensors`, or shards of at most
  `MAX_SHARD_BYTES` plus the index; it accepts an iterator of (name, tensor) and writes each shard as
  soon as it is full, so a caller streaming tensors never holds more than one shard.
  `read_state_dict(folder)` reads safetensors, else legacy `.bin` through `torch.load(weights_only=True)`
  only (a pickle that wants to run code raises `UnsafeCheckpointError`).
- `num_image_tokens(config)`: placeholder tokens per image; `is_original_layout(config_dict)`: the
  original LLaVA layout is told apart by fields (`mm_vision_tower` and no `text_config`), never by name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from llava15.config import DEFAULT_TEMPLATE
from llava15.data.conversation import IMAGE_TOKEN
from llava15.data.images import ImageSettings

META_FILE = "llava15.json"
FORMAT_VERSION = 1
MAX_SHARD_BYTES = 5 * 1024**3
# Vision towers whose transformers-4.x class nested its weights under `vision_model.` (5.x flattened it).
NESTED_VISION_TYPES = {"clip_vision_model", "siglip_vision_model", "siglip2_vision_model"}
# Any layout transformers 5 reads (its 5.x names, and the 4.x names it still accepts) → canonical; first matching anchored rule wins.
TO_CANONICAL: list[tuple[str, str | None]] = [
    (r"^model\.language_model\.(.+)$", r"language_model.model.\1"),
    (r"^lm_head\.weight$", "language_model.lm_head.weight"),
    (r"^model\.multi_modal_projector\.(.+)$", r"multi_modal_projector.\1"),
    (r"^model\.vision_tower\.(.+)$", r"vision_tower.\1"),
    (r"^(language_model\.(model|lm_head)\..+|multi_modal_projector\..+|vision_tower\..+)$", r"\1"),
]
# docs/conversion.md: AutoProcessor/vLLM tokenize "<image>\n" without the extra "▁" the original
# tokenizer_image_token puts after each image; llava15's own engine builds the original ids.
PROCESSOR_NOTE = ("HF processors tokenize the text after <image> jointly with it (one token fewer than the "
                  "original LLaVA prompt ids); llava15's engine reproduces the original ids.")


class ConversionError(ValueError):
    """Keys or config fields that a layout conversion cannot account for."""


class UnsafeCheckpointError(RuntimeError):
    """A legacy `.bin` checkpoint holds objects that only an unsafe pickle load could build."""


def package_version() -> str:
    try:
        return metadata.version("llava15")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class CheckpointMeta:
    """`llava15.json`: how a checkpoint was made and how to prompt it (see module docstring)."""

    template: str = DEFAULT_TEMPLATE
    image: ImageSettings = field(default_factory=ImageSettings)
    image_token_id: int | None = None
    num_image_tokens: int | None = None
    recipe: dict | None = None
    kind: str = "llava15"  # "llava15" (a full checkpoint) | "llava15-lora" (an adapter folder)
    base: str | None = None  # LoRA adapters: the base checkpoint they apply to
    source: dict | None = None  # converted from the original layout: what `to_original` needs to undo it
    merged_from: dict | None = None  # a merged LoRA run: its adapter and base
    version: str = field(default_factory=package_version)
    extra: dict = field(default_factory=dict)  # keys written by other versions, kept as they were

    _KNOWN = ("format", "format_version", "llava15_version", "template", "image", "image_token", "image_token_id",
              "num_image_tokens", "recipe", "base", "source", "merged_from", "note")

    def to_json(self) -> dict:
        out: dict[str, Any] = {"format": self.kind, "format_version": FORMAT_VERSION,
                               "llava15_version": self.version, "template": self.template,
                               "image": self.image.to_json()}
        if self.kind == "llava15":
            out.update(image_token=IMAGE_TOKEN, image_token_id=self.image_token_id,
                       num_image_tokens=self.num_image_tokens)
        out["recipe"] = self.recipe
        for key in ("base", "source", "merged_from"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.kind == "llava15":
            out["note"] = PROCESSOR_NOTE
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = META_FILE) -> CheckpointMeta:
        try:
            return cls(template=d["template"], image=ImageSettings.from_json(d["image"]),
                       image_token_id=d.get("image_token_id"), num_image_tokens=d.get("num_image_tokens"),
                       recipe=d.get("recipe"), kind=d.get("format", "llava15"), base=d.get("base"),
                       source=d.get("source"), merged_from=d.get("merged_from"),
                       version=d.get("llava15_version", "unknown"),
                       extra={k: v for k, v in d.items() if k not in cls._KNOWN})
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: not a valid llava15 metadata file ({type(exc).__name__}: {exc})") from None


def read_meta(folder: str | Path) -> CheckpointMeta | None:
    """The folder's `llava15.json`, or None when it has none (e.g. a llava-hf hub folder)."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    return CheckpointMeta.from_json(data, str(path))


def write_meta(folder: str | Path, meta: CheckpointMeta) -> Path:
    path = Path(folder) / META_FILE
    path.write_text(json.dumps(meta.to_json(), indent=2))
    return path


def has_cls_token(vision_config: Any) -> bool:
    """CLIP's vision tower prepends a CLS token to its patch features; SigLIP's does not."""
    return str(getattr(vision_config, "model_type", "")).startswith("clip")


def num_image_tokens(config: Any) -> int:
    """Placeholder tokens per image: the tower's output tokens (patches, plus CLIP's CLS token), less the
    first one under the `default` strategy (which drops it, as transformers' LLaVA does: on CLIP that is
    the CLS token, so SigLIP towers use `full`)."""
    vc = config.vision_config
    tokens = (vc.image_size // vc.patch_size) ** 2 + (1 if has_cls_token(vc) else 0)
    return tokens - (1 if config.vision_feature_select_strategy == "default" else 0)


def is_original_layout(config: dict) -> bool:
    """Original LLaVA layout: vision tower referenced by `mm_vision_tower`, no nested text config."""
    return "mm_vision_tower" in config and "text_config" not in config


# ------------------------------------------------------------------------------------- key names


def rename_keys(tensors: Mapping[str, torch.Tensor], rules: list[tuple[str, str | None]], what: str
                ) -> dict[str, torch.Tensor]:
    """Rename by the first matching anchored rule (a None replacement drops the key); unmatched or
    colliding keys are a `ConversionError` naming them."""
    out: dict[str, torch.Tensor] = {}
    unmatched = []
    for key, t in tensors.items():
        for pattern, repl in rules:
            if re.match(pattern, key):
                if repl is not None:
                    new = re.sub(pattern, repl, key)
                    if new in out:
                        raise ConversionError(f"{what}: two keys map to {new!r} (second: {key!r})")
                    out[new] = t
                break
        else:
            unmatched.append(key)
    if unmatched:
        raise ConversionError(f"{what}: {len(unmatched)} keys match no rename rule: {sorted(unmatched)[:8]}")
    return out


def canonical_vision_key(key: str, vision_type: str) -> str:
    """`vision_tower.` + the tower's own key, nested under `vision_model.` as transformers 4.x had it."""
    if vision_type in NESTED_VISION_TYPES and not key.startswith("vision_model."):
        key = "vision_model." + key
    return "vision_tower." + key


def canonical_name(name: str, vision_type: str, tied: bool) -> str | None:
    """The canonical name of one `LlavaForConditionalGeneration` state-dict entry (None: not saved)."""
    if name.startswith("model.vision_tower."):
        return canonical_vision_key(name[len("model.vision_tower."):], vision_type)
    if name.startswith("model.multi_modal_projector."):
        return name[len("model."):]
    if name.startswith("model.language_model."):
        return "language_model.model." + name[len("model.language_model."):]
    if name == "lm_head.weight":
        return None if tied else "language_model.lm_head.weight"
    raise ValueError(f"parameter {name!r} is outside the LLaVA module tree "
                     "(vision_tower / multi_modal_projector / language_model / lm_head)")


def canonical_items(state: Mapping[str, torch.Tensor], config: Any) -> Iterable[tuple[str, torch.Tensor]]:
    """(canonical name, tensor) of a LLaVA state dict with this config, lazily (a tied lm_head is left out)."""
    vision_type = config.vision_config.model_type
    tied = bool(config.tie_word_embeddings)
    for name, tensor in state.items():
        new = canonical_name(name, vision_type, tied)
        if new is not None:
            yield new, tensor


def canonical_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The model's weights under llava-hf's 4.x key names."""
    return dict(canonical_items(model.state_dict(), model.config))


# ------------------------------------------------------------------------------------ weight files


def write_safetensors(tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]], out_dir: str | Path,
                      max_shard_bytes: int = MAX_SHARD_BYTES, prefix: str = "model") -> list[str]:
    """Write `prefix.safetensors`, or `prefix-0000i-of-0000n.safetensors` shards plus the index when the
    tensors exceed one shard. Shards are written as they fill (numbered at the end by renaming)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    meta = {"format": "pt"}
    written: list[tuple[Path, list[str]]] = []
    shard: dict[str, torch.Tensor] = {}
    size = total = 0

    def flush() -> None:
        path = out_dir / f".{prefix}-part{len(written):05d}.safetensors.tmp"
        save_file(shard, str(path), metadata=meta)
        written.append((path, list(shard)))
        shard.clear()

    for key, t in items:
        # shared storage (tied weights) and views are refused by safetensors: give each its own memory
        t = t.detach().to("cpu").contiguous().clone()
        nbytes = t.numel() * t.element_size()
        if shard and size + nbytes > max_shard_bytes:
            flush()
            size = 0
        if key in shard or any(key in keys for _, keys in written):
            raise ValueError(f"write_safetensors: tensor {key!r} given twice")
        shard[key] = t
        size += nbytes
        total += nbytes
    if shard or not written:
        flush()
    if len(written) == 1:
        final = out_dir / f"{prefix}.safetensors"
        written[0][0].replace(final)
        return [final.name]
    names = [f"{prefix}-{i + 1:05d}-of-{len(written):05d}.safetensors" for i in range(len(written))]
    weight_map = {}
    for name, (path, keys) in zip(names, written):
        path.replace(out_dir / name)
        weight_map.update(dict.fromkeys(keys, name))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / f"{prefix}.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return names


def remove_weight_files(folder: Path, prefix: str = "model") -> None:
    """Delete an earlier save's weight files, so no stale shard of a larger save is left behind."""
    for old in [*folder.glob(f"{prefix}*.safetensors"), *folder.glob(f"{prefix}.safetensors.index.json")]:
        old.unlink()


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
        try:
            part = load_file(str(f)) if f.suffix == ".safetensors" else load_bin(f)
        except UnsafeCheckpointError:
            raise
        except Exception as exc:  # safetensors raises its own error type without the file name
            raise ValueError(f"{f}: cannot read weights ({type(exc).__name__}: {exc}); the file is truncated "
                             "or not a weight file") from None
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
            f"loading without weights_only=True (the full unpickler), which can execute arbitrary code. Convert "
            f"it to safetensors with a trusted tool first. ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UnsafeCheckpointError(f"{path}: expected a dict of tensors, got {type(sd).__name__}")
    return sd
