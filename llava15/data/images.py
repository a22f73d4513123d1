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

`ImageSettings(size, mean, std, aspect_ratio)` is how one checkpoint turns images into pixels; it is
recorded in the checkpoint (`llava15.json`) and written as the HF processor config
(`to_processor_config`, read back by `from_processor_config` for folders without our metadata).
`aspect_ratio` is the one name of the pad / square / resize choice (the recipe key is
`data.image_aspect_ratio`, the original's name).
"""

from __future__ import annotations

import functools
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ASPECT_RATIOS = ("pad", "square", "resize")
DEFAULT_ASPECT_RATIO = "pad"  # LLaVA-1.5 stage 2 (expand2square)
# The original code applies the CLIP processor as is (shortest side + centre crop) unless its config
# says `image_aspect_ratio: pad`: what a stage-1 run and an original config without the field mean.
ORIGINAL_DEFAULT_ASPECT_RATIO = "square"


@dataclass
class ImageSettings:
    """How images are turned into pixels for one checkpoint."""

    size: int = 336
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    aspect_ratio: str = DEFAULT_ASPECT_RATIO

    def __post_init__(self) -> None:
        if self.aspect_ratio not in ASPECT_RATIOS:
            raise ValueError(f"image aspect ratio {self.aspect_ratio!r} unknown; known: {', '.join(ASPECT_RATIOS)}")
        self.size, self.mean, self.std = int(self.size), tuple(self.mean), tuple(self.std)

    def to_json(self) -> dict:
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std), "aspect_ratio": self.aspect_ratio}

    @classmethod
    def from_json(cls, d: dict) -> ImageSettings:
        return cls(size=int(d["size"]), mean=tuple(d["mean"]), std=tuple(d["std"]), aspect_ratio=d["aspect_ratio"])

    def to_processor_config(self) -> dict:
        """HF's `LlavaImageProcessor` config for these settings (`CLIPImageProcessor` has no `do_pad`,
        and `do_pad` is LLaVA-1.5's expand-to-square)."""
        s = self.size
        crop = self.aspect_ratio != "resize"
        return {
            "image_processor_type": "LlavaImageProcessor", "processor_class": "LlavaProcessor",
            "do_convert_rgb": True, "do_pad": self.aspect_ratio == "pad", "do_resize": True,
            "size": {"shortest_edge": s} if crop else {"height": s, "width": s}, "resample": 3,
            "do_center_crop": crop, "crop_size": {"height": s, "width": s}, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(self.mean),
            "image_std": list(self.std),
        }

    @classmethod
    def from_processor_config(cls, pp: dict, default_size: int) -> ImageSettings:
        """The settings an HF image processor config describes (what a llava-hf folder holds)."""
        crop = pp.get("crop_size") or {}
        size = crop.get("height") or (pp.get("size") or {}).get("shortest_edge") or default_size
        if pp.get("do_pad"):
            aspect = "pad"
        elif pp.get("do_center_crop", True):
            aspect = "square"
        else:
            aspect = "resize"
        return cls(size=int(size), mean=tuple(pp.get("image_mean", CLIP_MEAN)),
                   std=tuple(pp.get("image_std", CLIP_STD)), aspect_ratio=aspect)


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


def preprocess_image(image: Image.Image, aspect_ratio: str = DEFAULT_ASPECT_RATIO, size: int = 336,
                     mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD) -> torch.Tensor:
    """A `3×size×size` float32 tensor, normalised with `mean`/`std` (see module docstring)."""
    if aspect_ratio not in ASPECT_RATIOS:
        raise ValueError(f"unknown image aspect ratio {aspect_ratio!r}; known: {', '.join(ASPECT_RATIOS)}")
    image = to_rgb(image)
    if aspect_ratio == "pad":
        image = resize_shortest_and_crop(expand2square(image, pad_color(mean)), size)
    elif aspect_ratio == "square":
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


def preprocess_with(image: Image.Image, settings: ImageSettings) -> torch.Tensor:
    """`preprocess_image` with a checkpoint's `ImageSettings`."""
    return preprocess_image(image, settings.aspect_ratio, settings.size, settings.mean, settings.std)


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
