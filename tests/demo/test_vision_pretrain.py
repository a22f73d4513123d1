"""The demo's stand-in for CLIP: dense per-patch labels from scene descriptions, and the tower it trains."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from llava15.data.images import preprocess_image
from llava15.demo.world.labels import HEAD_SIZES, centre_in_image, patch_labels
from llava15.demo.world.scenes import Item, Scene, draw_scene
from llava15.demo.world.words import COLORS, SHAPES, SIZES


def _scene(width: int, height: int, objects: tuple[Item, ...]) -> Scene:
    return Scene("t", "t.png", width, height, "gray", objects, (), 2)


def test_square_scene_labels_the_patch_holding_each_centre():
    red = Item("star", "red", "large", 0, 0, (4, 4, 28, 28))  # centre (16, 16): patch (1, 1) of 6x6
    blue = Item("cross", "blue", "small", 2, 2, (70, 70, 84, 84))  # centre (77, 77): patch (4, 4)
    labels = patch_labels(_scene(96, 96, (red, blue)), "pad", 96, 16)
    assert labels.shape == (36, 5)
    assert labels[1 * 6 + 1].tolist() == [list(COLORS).index("red"), SHAPES.index("star"), SIZES.index("large"), 0, 0]
    assert labels[4 * 6 + 4].tolist() == [list(COLORS).index("blue"), SHAPES.index("cross"), SIZES.index("small"), 2, 2]
    none = [n - 1 for n in HEAD_SIZES]
    assert sum(row.tolist() == none for row in labels) == 34


def test_labels_follow_the_padding_and_the_crop_of_preprocessing():
    # A wide canvas (120 x 96): `pad` centres it on a 120 square (12 px bands above and below), then
    # scales by 0.8; `square` scales the short side to 96 and crops 12 px off each side.
    item = Item("circle", "green", "large", 0, 2, (100, 0, 120, 20))
    scene = _scene(120, 96, (item,))
    assert centre_in_image(scene, item.bbox, "pad", 96) == pytest.approx((88.0, 17.6))
    assert centre_in_image(scene, item.bbox, "square", 96) == pytest.approx((98.0, 10.0))
    assert patch_labels(scene, "pad", 96, 16)[1 * 6 + 5, 0] == list(COLORS).index("green")
    # cropped away by `square`: no patch claims it
    assert (patch_labels(scene, "square", 96, 16)[:, 0] == HEAD_SIZES[0] - 1).all()
    with pytest.raises(ValueError, match="image modes"):
        patch_labels(scene, "resize", 96, 16)


def test_labelled_patch_shows_the_object_colour():
    from llava15.data.images import CLIP_MEAN, CLIP_STD
    from llava15.demo.world.scenes import sample_scene

    for seed in range(4):  # square and non-square canvases
        scene = sample_scene(random.Random(seed), "s", "s.png", 96)
        pixels = preprocess_image(draw_scene(scene), "pad", 96).numpy()
        rgb = (pixels * np.array(CLIP_STD)[:, None, None] + np.array(CLIP_MEAN)[:, None, None]) * 255
        labels = patch_labels(scene, "pad", 96, 16)
        for obj in scene.objects:
            x, y = centre_in_image(scene, obj.bbox, "pad", 96)
            k = (int(y) // 16) * 6 + int(x) // 16
            assert labels[k, :2].tolist() == [list(COLORS).index(obj.color), SHAPES.index(obj.shape)]
            assert np.abs(rgb[:, int(y), int(x)] - np.array(COLORS[obj.color])).max() < 40


def test_pretrain_writes_a_plain_clip_tower(tmp_path):
    from transformers import AutoImageProcessor, CLIPVisionModel

    from llava15.demo.vision_pretrain import pretrain_vision_tower

    vision = dict(image_size=48, patch_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, projection_dim=32)
    out = pretrain_vision_tower(tmp_path / "tower", vision, n_images=64, image_size=48, batch_size=32)
    tower = CLIPVisionModel.from_pretrained(out)
    assert tower.config.hidden_size == 32 and tower.config.image_size == 48
    assert AutoImageProcessor.from_pretrained(out).crop_size == {"height": 48, "width": 48}
    report = json.loads((out / "vision_pretrain.json").read_text())
    assert report["n_images"] == 64 and 0.0 <= report["heldout"]["color"] <= 1.0
