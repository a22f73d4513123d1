"""Load a LLaVA checkpoint with everything needed to prompt it the way it was trained.

Contract: `load_bundle(path_or_id, dtype=None, device=None) -> LlavaBundle` for a llava15 folder, a
llava-hf hub id or folder, or an original-layout LLaVA folder (converted to a temporary HF folder
first, `model.convert.to_hf`). The template and image settings come from `llava15.json`
(`model.format.CheckpointMeta`), never from the folder name. A folder without it (llava-hf repos) gets
template `vicuna_v1` (what LLaVA-1.5 was trained with) and the image settings its
`preprocessor_config.json` describes, with a logged warning. Missing or unexpected weight keys, and a
tokenizer whose `<image>` id disagrees with the config, are errors naming the folder.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import LlavaForConditionalGeneration, PreTrainedTokenizerBase

from llava15.config import DEFAULT_TEMPLATE
from llava15.data.conversation import IMAGE_TOKEN
from llava15.data.images import ImageSettings
from llava15.model.format import CheckpointMeta, is_original_layout, num_image_tokens, read_meta

log = logging.getLogger(__name__)


@dataclass
class LlavaBundle:
    """A loaded checkpoint: the model and everything needed to prompt it the way it was trained."""

    model: LlavaForConditionalGeneration
    tokenizer: PreTrainedTokenizerBase
    template: str
    image: ImageSettings
    image_token_id: int
    num_image_tokens: int
    meta: CheckpointMeta = field(default_factory=CheckpointMeta)


def resolve_folder(path_or_id: str | Path) -> Path:
    """A local folder as is; a hub id (`owner/name`) downloaded (or found in the hub cache)."""
    path = Path(path_or_id)
    if path.is_dir():
        return path
    if re.fullmatch(r"[\w.-]+/[\w.-]+", str(path_or_id)) is None:
        raise FileNotFoundError(f"{path_or_id}: not a folder and not a hub id of the form owner/name")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(path_or_id)))


def load_bundle(path_or_id: str | Path, dtype: torch.dtype | str | None = None,
                device: str | torch.device | None = None) -> LlavaBundle:
    """Load a llava15, llava-hf or original-layout LLaVA checkpoint (see module docstring)."""
    from transformers import AutoTokenizer

    folder = resolve_folder(path_or_id)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder}: no config.json; not a model checkpoint folder")
    if is_original_layout(json.loads(config_file.read_text())):
        from llava15.model.convert import to_hf

        with tempfile.TemporaryDirectory(prefix="llava15-convert-") as tmp:
            log.info("%s is in the original LLaVA layout; converting to the HF layout in %s", folder, tmp)
            bundle = load_bundle(to_hf(folder, Path(tmp) / "hf"), dtype=dtype, device=device)
            bundle.meta.extra["converted_from"] = str(folder)
            return bundle

    kwargs: dict[str, Any] = {"output_loading_info": True}
    if dtype is not None:
        kwargs["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
    model, info = LlavaForConditionalGeneration.from_pretrained(folder, **kwargs)
    bad = {k: sorted(v)[:10] for k, v in info.items() if k in ("missing_keys", "unexpected_keys") and v}
    if bad:
        raise ValueError(f"{folder}: weights do not match LlavaForConditionalGeneration: {bad}")
    tokenizer = AutoTokenizer.from_pretrained(folder)

    meta = read_meta(folder)
    if meta is None:
        pp = folder / "preprocessor_config.json"
        image = ImageSettings.from_processor_config(json.loads(pp.read_text()) if pp.is_file() else {},
                                                    model.config.vision_config.image_size)
        meta = CheckpointMeta(template=DEFAULT_TEMPLATE, image=image)
        log.warning("%s has no llava15.json: using template %r (LLaVA-1.5's) and image settings %s from "
                    "preprocessor_config.json; pass them explicitly if this model was trained otherwise",
                    folder, meta.template, image)

    image_token_id = int(model.config.image_token_id)
    tok_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if tok_id != image_token_id:
        raise ValueError(f"{folder}: tokenizer maps {IMAGE_TOKEN!r} to {tok_id} but config.json "
                         f"image_token_index is {image_token_id}")
    if device is not None:
        model.to(device)
    model.eval()
    return LlavaBundle(model=model, tokenizer=tokenizer, template=meta.template, image=meta.image,
                       image_token_id=image_token_id, num_image_tokens=num_image_tokens(model.config),
                       meta=meta)
