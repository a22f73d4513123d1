"""Image loading and LLaVA-1.5 preprocessing, equal to the original (CLIP processor) to float precision.

`load_image` opens a path, bytes, a `{"bytes"|"path"}` dict or a PIL image and returns RGB. Like the
original (`Image.open(...).convert('RGB')`) an alpha channel is dropped, not composited: RGBA/LA/P
pixels keep their colour where they are transparent. 16-bit and 32-bit greyscale is scaled to 8 bits
first (PIL's own conversion would clip it to white).

`preprocess_image(image, mode, size)`: `pad` = expand2square onto the truncated CLIP-mean colour
(122, 116, 104), original at `((S-w)//2, 0)` or `(0, (S-h)//2)`, then resize to `size`; `square` =
resize the short side to `size` (long side `int(size*long/short)`) and centre-crop (stage 1's
default); `resize` = stretch to `size`×`size`. Resizing is PIL bicubic on uint8 (torch interpolation
differs by up to 1.8 after normalisation); then `x/255` in float64 -> float32, `(x-mean)/std` in
float32, CHW. Bounding boxes in region-level data refer to the padded square, as in the original.
"""

from __future__ import annotations

import functools
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MODES = ("pad", "square", "resize")


def write_clip_preprocessor_config(folder: Path, size: int) -> Path:
    """`folder/preprocessor_config.json`: CLIP's image processor at `size` (what `AutoImageProcessor`
    and vLLM read for a vision-tower folder)."""
    config = {"crop_size": {"height": size, "width": size}, "do_center_crop": True, "do_convert_rgb": True,
              "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": list(CLIP_MEAN),
              "image_processor_type": "CLIPImageProcessor", "image_std": list(CLIP_STD), "resample": 3,
              "rescale_factor": 1 / 255, "size": {"shortest_edge": size}}
    path = Path(folder) / "preprocessor_config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def load_image(src: Any) -> Image.Image:
    """An RGB PIL image from a path, bytes, a `{"bytes", "path"}` dict or a PIL image."""
    if isinstance(src, dict):
        src = src.get("bytes") or src.get("path")
    if isinstance(src, (bytes, bytearray)):
        image = Image.open(io.BytesIO(src))
    elif isinstance(src, (str, Path)):
        image = Image.open(src)
    elif isinstance(src, Image.Image):
        image = src
    else:
        raise TypeError(f"cannot load an image from {type(src).__name__}")
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        image = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).round().astype(np.uint8), "L")
    with warnings.catch_warnings():  # "Palette images with Transparency ..." is expected and harmless
        warnings.simplefilter("ignore", UserWarning)
        return image.convert("RGB")


def pad_color(mean: tuple[float, ...] = CLIP_MEAN) -> tuple[int, ...]:
    """The original's background: per channel int(255 * mean) (truncated, not rounded)."""
    return tuple(int(x * 255) for x in mean)


def expand2square(image: Image.Image, color: tuple[int, ...]) -> Image.Image:
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), color)
    canvas.paste(image, (0, (w - h) // 2) if w > h else ((h - w) // 2, 0))
    return canvas


def resize_shortest_and_crop(image: Image.Image, size: int) -> Image.Image:
    """CLIP's resize (short side = size, long side int(size*long/short), bicubic) + centre crop."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BICUBIC)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    if (new_w, new_h) != (size, size):
        image = image.crop((left, top, left + size, top + size))
    return image


def preprocess_image(image: Image.Image, mode: str = "pad", size: int = 336,
                     mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD) -> torch.Tensor:
    """A `3×size×size` float32 tensor, normalised with `mean`/`std` (see module docstring)."""
    if mode not in MODES:
        raise ValueError(f"unknown image mode {mode!r}; known: {', '.join(MODES)}")
    image = to_rgb(image)
    if mode == "pad":
        image = resize_shortest_and_crop(expand2square(image, pad_color(mean)), size)
    elif mode == "square":
        image = resize_shortest_and_crop(image, size)
    elif image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    arr = np.asarray(image, dtype=np.uint8)
    lut = _normalize_table(tuple(mean), tuple(std))
    out = np.empty((3, size, size), dtype=np.float32)
    for c in range(3):  # a 256-entry table per channel gives the same floats as computing each pixel
        np.take(lut[c], arr[:, :, c], out=out[c])
    return torch.from_numpy(out)


@functools.lru_cache(maxsize=8)
def _normalize_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(x/255 in float64 -> float32 - mean) / std in float32, for every uint8 x: shape [3, 256]."""
    x = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    return np.stack([(x - np.float32(m)) / np.float32(s) for m, s in zip(mean, std)]).astype(np.float32)


def pad_then_rgb(image: Image.Image, mean: tuple[float, ...] = CLIP_MEAN) -> Image.Image:
    """An RGB square in the order of the original `model_vqa_science.py` / `model_vqa_mmbench.py`: they
    open the image without `.convert('RGB')`, so `expand2square` runs in the image's own mode and the
    CLIP processor converts afterwards. For a palette (`P`) image the new canvas gets a palette holding
    only the background colour, so the pasted indices show other colours (the content is usually
    blanked). RGB/RGBA give the same pixels as converting first. Modes whose canvas cannot take an RGB
    colour (L, LA, 1, I;16, ...) make the original raise; they are converted first here."""
    if image.width == image.height:
        return to_rgb(image)
    try:
        padded = expand2square(image, pad_color(mean))
    except (TypeError, ValueError):
        return expand2square(to_rgb(image), pad_color(mean))
    return to_rgb(padded)
