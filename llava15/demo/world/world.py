"""The synthetic world of one seed: seeded scene streams, deterministic file writing, text corpus.

Every scene comes from its own `random.Random("llava15-synthetic/{seed}/{stream}/{index}")`, so a scene
depends only on (seed, stream, index): splits and benchmarks never share a scene, a different seed
gives different scenes, and files are byte-identical across runs (string seeding is hashed with
SHA-512 by `random`, independent of PYTHONHASHSEED). PNGs carry no timestamps or text chunks.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

from PIL import Image

from llava15.demo.world.scenes import Scene, draw_scene, sample_scene


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    # Level 1: these flat images barely shrink further, and encoding is most of the synthesis time.
    image.save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()


def write_json(path: Path, obj: object, indent: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=indent) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


class World:
    """Scene factory for one seed: samples, draws and saves scenes, and collects every string."""

    def __init__(self, seed: int, image_size: int) -> None:
        self.seed = seed
        self.image_size = image_size
        self.scenes: list[dict] = []  # scene descriptions, in creation order
        self.corpus: dict[str, None] = {}  # every generated string, insertion-ordered set

    def rng(self, stream: str, index: int) -> random.Random:
        return random.Random(f"llava15-synthetic/{self.seed}/{stream}/{index}")

    def scene(self, stream: str, index: int, folder: Path | None, name: str,
              **sample_kw) -> tuple[Scene, random.Random]:
        """Sample scene `index` of `stream`, save its PNG as `folder/name` (unless `folder` is None);
        return it and its rng.

        The returned rng continues the scene's stream, so text drawn from it is tied to the scene.
        """
        rng = self.rng(stream, index)
        scene = sample_scene(rng, f"s{self.seed}-{stream}-{index:06d}", name, self.image_size, **sample_kw)
        if folder is not None:
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png_bytes(draw_scene(scene)))
        self.scenes.append({"stream": stream, **scene.to_dict()})
        return scene, rng

    def add_text(self, *strings: str) -> None:
        for s in strings:
            self.corpus.setdefault(s, None)

    def add_records(self, records: list[dict]) -> None:
        for r in records:
            self.add_text(*(turn["value"].replace("<image>", "").strip() for turn in r["conversations"]))
