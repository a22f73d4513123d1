"""Pretrain a from-scratch CLIP vision tower on the synthetic world (the demo's stand-in for CLIP).

Why: no pretrained encoder can be downloaded here, and a tower trained only through the LM's caption
loss learns far too slowly on two CPU cores (benchmarks/history.md: the LM's loss barely depended
on the image). The synthetic world's scene descriptions label every patch exactly
(`demo.world.labels`), so the tower gets dense supervision: per patch, the colour, shape, size and
grid cell of the object whose centre it holds (or "none"), and the background colour from the mean
feature. The heads read the layer LLaVA reads (`feature_layer`, default -2, CLS dropped) and are
discarded afterwards: what is written is a plain `CLIPVisionModel` folder that stage 1 and stage 2
use frozen, as the paper uses CLIP.

Scenes are drawn fresh for every batch from their own stream of the world (`vision-pretrain`), so
they never coincide with a training or evaluation image; held-out accuracies on `vision-heldout`
scenes are written to `vision_pretrain.json` next to the weights.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llava15.data.images import preprocess_image, write_clip_preprocessor_config
from llava15.demo.world.labels import (
    HEAD_NAMES,
    HEAD_SIZES,
    NUM_BACKGROUNDS,
    background_label,
    patch_labels,
)
from llava15.demo.world.scenes import draw_scene
from llava15.demo.world.world import World

NONE_WEIGHT = 0.2  # most patches hold no object centre; without this "none" swamps the rare classes
SHAPE_WEIGHT = 3.0  # shape is the slowest attribute to learn from pixels (colour is nearly linear)


class PatchHeads(nn.Module):
    """Linear read-outs of each patch feature (HEAD_NAMES) and of the mean feature (background)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(dim, n) for n in HEAD_SIZES)
        self.background = nn.Linear(dim, NUM_BACKGROUNDS)

    def forward(self, feats: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        return [h(feats) for h in self.heads], self.background(feats.mean(1))


def scene_batch(world: World, stream: str, start: int, n: int, size: int, patch: int, mode: str = "pad"
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixels [n,3,size,size], patch labels [n,P,5] and background labels [n] of scenes start..start+n."""
    pixels, labels, backgrounds = [], [], []
    for i in range(start, start + n):
        scene, _ = world.scene(stream, i, None, f"{stream}-{i}.png")
        pixels.append(preprocess_image(draw_scene(scene), mode, size))
        labels.append(patch_labels(scene, mode, size, patch))
        backgrounds.append(background_label(scene))
    world.scenes.clear()  # the world keeps descriptions for scenes.jsonl; nothing is written here
    return torch.stack(pixels), torch.from_numpy(np.stack(labels)), torch.tensor(backgrounds)


def patch_loss(outs: list[torch.Tensor], bg_logits: torch.Tensor, labels: torch.Tensor,
               backgrounds: torch.Tensor) -> torch.Tensor:
    loss = F.cross_entropy(bg_logits, backgrounds)
    for i, (logits, n) in enumerate(zip(outs, HEAD_SIZES)):
        weight = torch.ones(n)
        weight[-1] = NONE_WEIGHT
        head = F.cross_entropy(logits.reshape(-1, n), labels[..., i].reshape(-1), weight=weight)
        loss = loss + (SHAPE_WEIGHT if HEAD_NAMES[i] == "shape" else 1.0) * head
    return loss


def heldout_accuracy(outs: list[torch.Tensor], bg_logits: torch.Tensor, labels: torch.Tensor,
                     backgrounds: torch.Tensor) -> dict[str, float]:
    """Per-head accuracy on patches that hold an object centre, detection recall, background."""
    centre = labels[..., 0] != HEAD_SIZES[0] - 1
    acc = {name: float((outs[i].argmax(-1)[centre] == labels[..., i][centre]).float().mean())
           for i, name in enumerate(HEAD_NAMES)}
    acc["detection_recall"] = float((outs[0].argmax(-1)[centre] != HEAD_SIZES[0] - 1).float().mean())
    acc["background"] = float((bg_logits.argmax(-1) == backgrounds).float().mean())
    return {k: round(v, 4) for k, v in acc.items()}


def pretrain_vision_tower(out_dir: str | Path, vision: dict[str, Any], *, seed: int = 0, n_images: int = 16000,
                          image_size: int = 96, batch_size: int = 32, lr: float = 2e-3, feature_layer: int = -2,
                          log_every: int = 2000) -> Path:
    """Train `CLIPVisionModel(CLIPVisionConfig(**vision))` on `n_images` fresh scenes; save it to `out_dir`."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    if vision.get("image_size", image_size) != image_size:
        raise ValueError(f"vision.image_size={vision['image_size']} differs from image_size={image_size}")
    out = Path(out_dir)
    patch = int(vision["patch_size"])
    torch.manual_seed(seed)
    tower = CLIPVisionModel(CLIPVisionConfig(**{**vision, "image_size": image_size}))
    heads = PatchHeads(tower.config.hidden_size)
    params = [*tower.parameters(), *heads.parameters()]
    steps = max(1, n_images // batch_size)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, 0.5 * (
        1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, steps - warmup))))))
    world = World(seed, image_size)
    heldout = scene_batch(World(seed, image_size), "vision-heldout", 0, 200, image_size, patch)

    def features(pixels: torch.Tensor) -> torch.Tensor:
        return tower(pixel_values=pixels, output_hidden_states=True).hidden_states[feature_layer][:, 1:]

    start, history = time.time(), []
    tower.train()
    for step in range(steps):
        pixels, labels, backgrounds = scene_batch(world, "vision-pretrain", step * batch_size, batch_size,
                                                  image_size, patch)
        loss = patch_loss(*heads(features(pixels)), labels, backgrounds)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        seen, loss = (step + 1) * batch_size, loss.detach()
        if seen % log_every < batch_size or step == steps - 1:
            with torch.no_grad():
                acc = heldout_accuracy(*heads(features(heldout[0])), heldout[1], heldout[2])
            history.append({"images": seen, "loss": round(float(loss), 4), **acc})
            print(f"[vision] {seen}/{n_images} images, {time.time() - start:.0f}s, loss {float(loss):.3f}, "
                  + ", ".join(f"{k} {v:.2f}" for k, v in acc.items()), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    tower.save_pretrained(out)
    write_clip_preprocessor_config(out, image_size)
    (out / "vision_pretrain.json").write_text(json.dumps({
        "n_images": n_images, "batch_size": batch_size, "lr": lr, "feature_layer": feature_layer, "seed": seed,
        "seconds": round(time.time() - start, 1), "heldout": history[-1], "history": history}, indent=2))
    return out
