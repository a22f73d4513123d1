"""Per-patch labels of a synthetic scene, for pretraining a from-scratch vision tower.

The scene description says exactly what is where, so every patch of the preprocessed image can be
told what it shows: the patch that holds an object's centre gets that object's colour, shape, size
and grid cell (row, column); every other patch gets "none" in every head. The geometry is the one
`data.images.preprocess_image` applies (`pad`: centred on a square, then resized; `square`: short
side resized, centre crop), so labels line up with the pixels the tower sees.

Contract: `patch_labels(scene, mode, image_size, patch_size)` -> int64 array [patches, 5] with columns
(color, shape, size, row, col); "none" is the last class of each head (`HEAD_SIZES`). Two object
centres in one patch (rare, only on padded non-square canvases): the later object wins.
"""

from __future__ import annotations

import numpy as np

from llava15.demo.world.scenes import Scene
from llava15.demo.world.words import BACKGROUNDS, COLORS, SHAPES, SIZES

HEAD_NAMES = ("color", "shape", "size", "row", "col")
HEAD_SIZES = (len(COLORS) + 1, len(SHAPES) + 1, len(SIZES) + 1, 4, 4)
NUM_BACKGROUNDS = len(BACKGROUNDS)
_COLOR, _SHAPE, _BG = list(COLORS), list(SHAPES), list(BACKGROUNDS)


def centre_in_image(scene: Scene, bbox: tuple[int, int, int, int], mode: str, size: int) -> tuple[float, float]:
    """Where the centre of `bbox` lands in the `size` x `size` preprocessed image."""
    w, h = scene.width, scene.height
    cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    if mode == "pad":
        side = max(w, h)
        cx, cy, w, h = cx + (side - w) // 2, cy + (side - h) // 2, side, side
    elif mode != "square":
        raise ValueError(f"patch labels support image modes 'pad' and 'square', not {mode!r}")
    new_w, new_h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    return cx * new_w / w - (new_w - size) // 2, cy * new_h / h - (new_h - size) // 2


def patch_labels(scene: Scene, mode: str, image_size: int, patch_size: int) -> np.ndarray:
    grid = image_size // patch_size
    labels = np.tile(np.array([n - 1 for n in HEAD_SIZES], dtype=np.int64), (grid * grid, 1))
    for o in scene.objects:
        x, y = centre_in_image(scene, o.bbox, mode, image_size)
        if 0 <= x < image_size and 0 <= y < image_size:  # `square` crops the long side
            labels[int(y // patch_size) * grid + int(x // patch_size)] = (
                _COLOR.index(o.color), _SHAPE.index(o.shape), SIZES.index(o.size), o.row, o.col)
    return labels


def background_label(scene: Scene) -> int:
    return _BG.index(scene.background)
