"""`llava15 export --to vllm SRC DST`: write and check the HF layout vLLM serves, print the command.

Contract:
- `export_vllm(src, dst) -> list[str]`: loads any checkpoint `load_bundle` reads (llava15, llava-hf,
  original LLaVA layout), writes it with `save_checkpoint` (canonical 4.x key names,
  `text_config.architectures`, `preprocessor_config.json` + `processor_config.json`, tokenizer with
  `<image>`, `chat_template.jinja`; docs/conversion.md) and returns `validate_vllm_layout(dst)`.
- `validate_vllm_layout(folder) -> list[str]`: the problems vLLM would hit (empty = none): config
  fields, weight key names read from the safetensors headers, `<image>` as one token equal to
  `image_token_index`, processor files, and the HF processor's own placeholder count on a real image
  (the 575-vs-576 trap) equal to the model's image features.
- `run_export(args)`: exit status 0 when the folder validates, after printing the `vllm serve` command
  and the one known difference from llava15's engine (docs/conversion.md).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path
from typing import Any

from llava15.model.format import num_image_tokens, read_meta
from llava15.model.load import load_bundle
from llava15.model.save import save_checkpoint

WEIGHT_PREFIXES = ("language_model.model.", "language_model.lm_head.", "multi_modal_projector.linear_",
                   "vision_tower.vision_model.")
TOKEN_NOTE = (
    "Known difference: vLLM builds prompts with the HF processor, which tokenizes the text after each "
    "<image> together with it; the original LLaVA prompt (what `llava15 serve` and `llava15 eval` use) "
    "has one extra '▁' token after every image. Replies can differ slightly from llava15's own engine.")


def export_vllm(src: str | Path, dst: str | Path) -> list[str]:
    bundle = load_bundle(src, dtype="auto", device="cpu")
    meta = dataclasses.replace(bundle.meta, extra={**bundle.meta.extra, "exported_from": str(src)})
    save_checkpoint(bundle.model, bundle.tokenizer, dst, template=bundle.template, image=bundle.image, meta=meta)
    return validate_vllm_layout(dst)


def _weight_keys(folder: Path) -> list[str]:
    from safetensors import safe_open

    keys: list[str] = []
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as sf:
            keys.extend(sf.keys())
    return keys


def validate_vllm_layout(folder: str | Path) -> list[str]:
    folder = Path(folder)
    problems: list[str] = []
    cfg_file = folder / "config.json"
    if not cfg_file.exists():
        return [f"{cfg_file}: missing"]
    cfg = json.loads(cfg_file.read_text())
    text, vision = cfg.get("text_config") or {}, cfg.get("vision_config") or {}
    if cfg.get("architectures") != ["LlavaForConditionalGeneration"]:
        problems.append(f"config.json architectures is {cfg.get('architectures')}, "
                        "vLLM needs ['LlavaForConditionalGeneration']")
    if not text.get("architectures"):
        problems.append("config.json text_config.architectures is missing (vLLM resolves the LM from it)")
    if vision.get("model_type") not in ("clip_vision_model", "siglip_vision_model"):
        problems.append(f"vision_config.model_type {vision.get('model_type')!r}: vLLM's LLaVA takes CLIP or SigLIP")
    image_id = cfg.get("image_token_index", cfg.get("image_token_id"))
    if image_id is None:
        problems.append("config.json has no image_token_index")

    keys = _weight_keys(folder)
    if not keys:
        problems.append(f"{folder}: no *.safetensors weights")
    odd = [k for k in keys if not k.startswith(WEIGHT_PREFIXES)]
    if odd:
        problems.append(f"{len(odd)} weight names outside the canonical layout, e.g. {odd[:3]} "
                        f"(expected prefixes {', '.join(WEIGHT_PREFIXES)})")
    if keys and "language_model.lm_head.weight" not in keys and not cfg.get("tie_word_embeddings"):
        problems.append("language_model.lm_head.weight is missing and embeddings are not tied")

    for name in ("preprocessor_config.json", "processor_config.json", "tokenizer_config.json"):
        if not (folder / name).exists():
            problems.append(f"{name} is missing")
    if not any((folder / n).exists() for n in ("chat_template.jinja", "chat_template.json")):
        problems.append("no chat_template.jinja / chat_template.json (vLLM's chat endpoint needs one)")
    if problems:
        return problems
    problems.extend(_check_processor(folder, cfg, image_id))
    return problems


def _expected_image_tokens(cfg: dict) -> int:
    from types import SimpleNamespace

    return num_image_tokens(SimpleNamespace(
        vision_config=SimpleNamespace(**cfg["vision_config"]),
        vision_feature_select_strategy=cfg.get("vision_feature_select_strategy", "default")))


def _check_processor(folder: Path, cfg: dict, image_id: int) -> list[str]:
    """Run the HF processor vLLM instantiates on a real image and count the placeholders it makes."""
    from PIL import Image
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(folder)
    except Exception as exc:  # any failure here is exactly what vLLM would hit
        return [f"AutoProcessor.from_pretrained failed: {type(exc).__name__}: {exc}"]
    tok = processor.tokenizer
    problems = []
    if tok.convert_tokens_to_ids("<image>") != image_id:
        problems.append(f"tokenizer maps <image> to {tok.convert_tokens_to_ids('<image>')}, "
                        f"config image_token_index is {image_id}")
    try:
        out = processor(text="USER: <image>\nWhat is this? ASSISTANT:", images=Image.new("RGB", (50, 40)),
                        return_tensors="pt")
    except Exception as exc:
        return problems + [f"the HF processor fails on an image prompt: {type(exc).__name__}: {exc}"]
    got = int((out["input_ids"] == image_id).sum())
    want = _expected_image_tokens(cfg)
    if got != want:
        problems.append(f"the HF processor expands <image> into {got} tokens but the model makes {want} "
                        "image features (check num_additional_image_tokens / patch_size in processor_config.json)")
    return problems


def run_export(args: Any) -> int:
    src, dst = Path(args.src), Path(args.dst)
    if args.to != "vllm":
        raise SystemExit(f"export --to {args.to}: only 'vllm' is supported")
    problems = export_vllm(src, dst)
    if problems:
        print(f"exported to {dst}, but vLLM would not serve it:")
        for p in problems:
            print(f"  - {p}")
        return 1
    meta = read_meta(dst)
    cmd = shlex.join(["vllm", "serve", str(dst.resolve()), "--served-model-name", dst.resolve().name,
                      "--chat-template", str((dst / "chat_template.jinja").resolve())])
    print(f"exported {src} -> {dst} (template {meta.template}, images: {meta.image.aspect_ratio}); "
          "vLLM layout checks passed.")
    print("serve it with:")
    print(f"  {cmd}")
    print(TOKEN_NOTE)
    return 0
