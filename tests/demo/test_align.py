"""Stage 1's alignment term reads the world's scene descriptions back exactly, and names a bad line."""

from __future__ import annotations

import json

import pytest

from llava15.demo.align import read_scenes
from llava15.demo.symbolic import patch_words


def test_scenes_read_back_from_scenes_jsonl_equal_the_written_ones(tmp_path) -> None:
    from llava15.demo.world import synthesize

    world = synthesize(tmp_path / "data", seed=3, n_train=12, n_eval=0)
    lines = [json.loads(x) for x in open(world["scenes"], encoding="utf-8")]
    scenes = read_scenes(world["scenes"], "pretrain")
    assert len(scenes) == sum(d["stream"] == "pretrain" for d in lines) == 12
    for scene, line in zip(scenes, [d for d in lines if d["stream"] == "pretrain"]):
        assert scene.to_dict() == {k: v for k, v in line.items() if k != "stream"}
        words = patch_words(scene, "pad", 96, 32)
        assert len(words) == 9 and sum(len(w) == 5 for w in words) == len(scene.objects)


def test_a_bad_scene_line_is_named(tmp_path) -> None:
    path = tmp_path / "scenes.jsonl"
    path.write_text(json.dumps({"stream": "pretrain", "id": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"scenes.jsonl:1: not a scene description"):
        read_scenes(path, "pretrain")
    with pytest.raises(ValueError, match="no scene of stream 'finetune'"):
        read_scenes(path, "finetune")
