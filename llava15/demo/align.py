"""Stage 1's alignment term: the projector regressed onto the world-LM's symbolic scenes.

The world-LM was pretrained reading symbolic scenes (`demo.symbolic`): one input position per patch,
the sum of its own word embeddings of what that patch shows. Stage 1 teaches the projector, from
captions alone, to turn the tower's patch features into inputs the LM understands; this term says it
directly: for the stage-1 training images, each projected patch is regressed (mean squared error) onto
the LM's embedding of that patch's words. LM and tower stay frozen; only the projector moves, as in
the paper's stage 1. The demo runs it after the caption training, on the same scenes, in both image
modes (stage 1 crops square, stage 2 and the evaluation pad).

`align_projector(checkpoint, scenes, image_folder, out)` loads a stage-1 checkpoint, fits its projector
and saves the result as a checkpoint of the same kind; `read_scenes` reads one stream of the world's
`scenes.jsonl`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from llava15.data.images import ImageSettings, load_image, preprocess_with
from llava15.demo.symbolic import WordEmbedder, patch_words
from llava15.demo.world.scenes import Scene

MODES = ("square", "pad")


def read_scenes(path: str | Path, stream: str) -> list[Scene]:
    """The scenes of one stream (`pretrain`, `finetune`) of the world's `scenes.jsonl`."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        d = json.loads(line)
        if d.get("stream") == stream:
            try:
                out.append(Scene.from_dict(d))
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{n}: not a scene description ({e})") from e
    if not out:
        raise ValueError(f"{path}: no scene of stream {stream!r}")
    return out


@torch.no_grad()
def patch_features(model, pixels: torch.Tensor) -> torch.Tensor:
    """What LLaVA feeds its projector for `pixels` (transformers' own layer and CLS selection), taken at
    the projector's input."""
    seen = []
    hook = model.model.multi_modal_projector.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    try:
        model.model.get_image_features(pixel_values=pixels)
    finally:
        hook.remove()
    return seen[0]


def alignment_pairs(model, tokenizer, scenes: list[Scene], image_folder: Path, image: ImageSettings,
                    batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(tower features, target embeddings), one row per patch, for every scene in every mode."""
    embedder = WordEmbedder(tokenizer)
    table = model.get_input_embeddings().weight.detach()
    grid = image.size // model.config.vision_config.patch_size
    feats, targets = [], []
    for mode in MODES:
        settings = dataclasses.replace(image, aspect_ratio=mode)
        for i in range(0, len(scenes), batch):
            chunk = scenes[i:i + batch]
            pixels = torch.stack([preprocess_with(load_image(image_folder / s.image), settings) for s in chunk])
            f = patch_features(model, pixels.to(table.dtype))
            if f.shape[1] != grid * grid:
                raise ValueError(f"the tower gives {f.shape[1]} patch features, the symbolic scene has {grid * grid}")
            feats.append(f.reshape(-1, f.shape[-1]))
            for s in chunk:
                targets.append(embedder.embed(patch_words(s, mode, image.size, image.size // grid), table))
    return torch.cat(feats), torch.cat(targets)


def fit_projector(projector: torch.nn.Module, feats: torch.Tensor, targets: torch.Tensor, steps: int,
                  lr: float, seed: int = 0) -> dict[str, float]:
    """Adam on the mean squared error, minibatches of 1,024 patches; returns the error before and after."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in projector.parameters() if p.requires_grad], lr=lr)
    with torch.no_grad():
        before = float(F.mse_loss(projector(feats), targets))
    for _ in range(steps):
        idx = torch.randint(0, len(feats), (1024,), generator=gen)
        loss = F.mse_loss(projector(feats[idx]), targets[idx])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        after = float(F.mse_loss(projector(feats), targets))
    return {"mse_before": round(before, 5), "mse_after": round(after, 5),
            "target_mean_square": round(float(targets.pow(2).mean()), 5)}


def align_projector(checkpoint: str | Path, scenes: list[Scene], image_folder: str | Path, out: str | Path,
                    steps: int = 4000, lr: float = 3e-3, seed: int = 0) -> dict:
    """Fit the projector of `checkpoint` to the symbolic scenes of `scenes` and save it to `out`."""
    from llava15.model.freeze import apply_freeze
    from llava15.model.load import load_bundle
    from llava15.model.save import save_checkpoint

    start = time.perf_counter()
    bundle = load_bundle(checkpoint, dtype=torch.float32)
    model = bundle.model
    apply_freeze(model, "projector")  # stage 1's rule: a linear projector's identity linear_2 stays fixed
    projector = model.model.multi_modal_projector
    feats, targets = alignment_pairs(model, bundle.tokenizer, scenes, Path(image_folder), bundle.image)
    report = fit_projector(projector, feats, targets, steps, lr, seed)
    report |= {"patches": len(feats), "steps": steps, "lr": lr, "seconds": round(time.perf_counter() - start, 1)}
    bundle.meta.extra["stage1_alignment"] = report
    save_checkpoint(model, bundle.tokenizer, out, bundle.template, bundle.image, meta=bundle.meta)
    return report
