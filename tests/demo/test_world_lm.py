"""The world-LM's training stream: how many objects its scenes hold, and what they show it."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from llava15.demo import world_lm as W
from llava15.demo.pretrain import PRETRAINED
from llava15.demo.symbolic import WordEmbedder, patch_words, separate_word_rows
from llava15.demo.world import text as T


def test_scenes_grow_from_one_object_to_the_worlds_two_to_five() -> None:
    counts = {i: len(W.scene_of(0, "train", i)[0].objects) for i in (0, 5999, 6000, 35999, 36000, 71999, 72000)}
    assert counts[0] == counts[5999] == 1
    assert 1 <= counts[6000] <= 2 and 1 <= counts[35999] <= 2
    assert 2 <= counts[36000] <= 3 and 2 <= counts[71999] <= 3
    assert max(len(W.scene_of(0, "train", i)[0].objects) for i in range(72000, 72200)) == 5
    # held-out scenes never take part in the curriculum
    assert min(len(W.scene_of(1, "heldout", i)[0].objects) for i in range(50)) == 2


def test_drills_ask_the_worlds_own_questions_and_the_symbolic_scene_holds_each_object() -> None:
    assert set(W.PRETRAIN.drill_kinds) <= set(T.VISUAL_QUESTIONS)
    scene, _ = W.scene_of(0, "train", 80000)
    words = patch_words(scene, "pad", W.IMAGE_SIZE, W.PATCH)
    for o in scene.objects:
        assert any({o.color, o.shape, o.size} <= set(ws) for ws in words), (o, words)


def test_separate_moves_collapsed_word_rows_apart_and_keeps_their_mean_and_every_other_row() -> None:
    embedder = WordEmbedder(AutoTokenizer.from_pretrained(PRETRAINED / "world_lm"))
    large, small = embedder.ids("large")[0], embedder.ids("small")[0]
    table = torch.randn(len(embedder.tokenizer), 16, generator=torch.Generator().manual_seed(0))
    table[small] = table[large] + 0.01  # collapsed: cosine ~1
    before = table.clone()
    separate_word_rows(table, embedder, ("large", "small"), 0.75, torch.Generator().manual_seed(0))
    mean = (before[large] + before[small]) / 2
    assert torch.allclose((table[large] + table[small]) / 2, mean, atol=1e-6)
    assert torch.allclose((table[[large, small]] - mean).norm(dim=1), torch.tensor([0.75, 0.75]), atol=1e-5)
    assert float(torch.nn.functional.cosine_similarity(table[large] - mean, table[small] - mean, dim=0)) < -0.99
    others = [i for i in range(len(table)) if i not in (large, small)]
    assert torch.equal(table[others], before[others])
    with pytest.raises(ValueError, match="--separate smallish: the tokenizer splits it into 2 tokens"):
        separate_word_rows(table, embedder, ("large", "smallish"), 0.75, torch.Generator())
    with pytest.raises(ValueError, match="name two words or more"):
        separate_word_rows(table, embedder, ("large",), 0.75, torch.Generator())
