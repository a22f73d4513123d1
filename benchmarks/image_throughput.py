"""Image preprocessing throughput on one core: llava15 vs transformers' CLIPImageProcessor.

Same decoded PIL images for both (the spec's three repo images when ../shared is present, plus random
photos of common sizes). Compares `pad` (expand2square + resize, LLaVA-1.5 stage 2) against the HF
`LlavaImageProcessor` (a CLIP processor with `do_pad=True`, i.e. expand2square), and `square` (resize + centre crop, stage 1) against
its default crop path; checks that the tensors agree, and prints images/s and the ratio.

    python benchmarks/image_throughput.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from llava15.data.images import CLIP_MEAN, CLIP_STD, load_image, preprocess_image

SPEC_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "spec" / "fixtures" / "images"


def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    out = [load_image(p) for p in sorted(SPEC_IMAGES.glob("*")) if p.suffix in (".jpg", ".png")]
    for w, h in [(640, 480), (480, 640), (500, 375), (1024, 768), (336, 336)]:
        out.append(Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)))
    return out


def rate(fn, imgs: list[Image.Image], seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for img in imgs:
            fn(img)
        n += len(imgs)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from transformers import CLIPImageProcessor

    kw = dict(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, image_mean=list(CLIP_MEAN),
              image_std=list(CLIP_STD), resample=3)
    hf_crop = CLIPImageProcessor(**kw)
    hf_pad = None
    try:  # LlavaImageProcessor's do_pad is expand2square; CLIP's do_pad pads differently
        from transformers import LlavaImageProcessor

        hf_pad = LlavaImageProcessor(**kw, do_pad=True)
    except (ImportError, TypeError, ValueError):
        hf_pad = None
    imgs = images()
    rows = [("square (resize + centre crop)", "square", hf_crop)]
    if hf_pad is not None:
        rows.insert(0, (f"pad (expand2square; HF: {type(hf_pad).__name__} do_pad)", "pad", hf_pad))
    print(f"{len(imgs)} images, one core (torch threads 1), {args.seconds:.0f} s per measurement")
    for label, mode, proc in rows:
        diff = max(float((preprocess_image(im, mode) - proc(im, return_tensors="pt")["pixel_values"][0])
                         .abs().max()) for im in imgs)
        ours = rate(lambda im, m=mode: preprocess_image(im, m), imgs, args.seconds)
        theirs = rate(lambda im, p=proc: p(im, return_tensors="pt")["pixel_values"], imgs, args.seconds)
        print(f"{label}: llava15 {ours:.1f} img/s, transformers {theirs:.1f} img/s, "
              f"ratio {ours / theirs:.2f}x, max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
