"""Scenes as the world-LM reads them before it has eyes: one input position per image patch.

The demo's LM is pretrained on text and *symbolic* scenes (`demo.world_lm`), never on pixels. A
symbolic scene takes the image's place in the prompt — the 9 positions that the vision tower's 9 patch
features fill later (96 px, patch 32: one patch per grid cell) — and the input embedding of each
position is built from the LM's own word embeddings: the sum of the words naming what the tower is
trained to report for that patch (`world.labels.patch_labels`: colour, shape and size of the object
centred in it), the patch's row and column, and, for a patch without an object, the background colour.
Questions use the same words ("What color is the circle?"), so finding "circle" among the image
positions is a match between rows of one embedding table: the lookup the LM learns in pretraining, and
the reason a stage-1 projector only has to map tower features into that table's space.

Contract: `patch_words(scene, aspect_ratio, image_size, patch_size) -> list[list[str]]` (per patch, row
major); `WordEmbedder(tokenizer)` maps words to token ids once, and `.embed(words_per_patch, table)`
returns [patches, hidden] from an embedding matrix (each word = the mean of its tokens' rows, the
tokens it has inside a sentence); `separate_word_rows(table, embedder, words, radius, generator)` moves
collapsed word rows apart (`demo pretrain --separate`).
"""

from __future__ import annotations

import torch

from llava15.demo.world.labels import HEAD_SIZES, patch_labels
from llava15.demo.world.scenes import COLS, ROWS, Scene
from llava15.demo.world.words import COLORS, SHAPES, SIZES

_COLOR, _SHAPE = list(COLORS), list(SHAPES)
_NONE = [n - 1 for n in HEAD_SIZES]


def patch_words(scene: Scene, aspect_ratio: str, image_size: int, patch_size: int) -> list[list[str]]:
    """The words describing each patch of the preprocessed image, as the tower's labels see it."""
    grid = image_size // patch_size
    labels = patch_labels(scene, aspect_ratio, image_size, patch_size)
    out = []
    for k, (color, shape, size, _, _) in enumerate(labels.tolist()):
        words = [ROWS[k // grid], COLS[k % grid]]
        # The background colour only where no object is: in an object's patch it is a second colour that
        # a colour lookup has to tell apart (held-out shape accuracy stayed at chance, 0.14, over 20M
        # tokens with it; 0.61 after 6M without it).
        words += [_COLOR[color], _SHAPE[shape], SIZES[size]] if color != _NONE[0] else [scene.background]
        out.append(words)
    return out


class WordEmbedder:
    """Word → token ids of one tokenizer, and per-patch sums of word embeddings."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._ids: dict[str, list[int]] = {}

    def ids(self, word: str) -> list[int]:
        if word not in self._ids:
            # the word as a sentence has it, after a space: byte-level BPE (SmolLM2) gives "red" alone
            # but "Ġred" in "a red"; SentencePiece gives "▁red" either way
            lead = self.tokenizer.encode("a", add_special_tokens=False)
            ids = self.tokenizer.encode(f"a {word}", add_special_tokens=False)
            ids = ids[len(lead):] if ids[:len(lead)] == lead else self.tokenizer.encode(word, add_special_tokens=False)
            if not ids:
                raise ValueError(f"the tokenizer gives no token for {word!r}")
            self._ids[word] = ids
        return self._ids[word]

    def index(self, words_per_patch: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(token ids, their patch, their weight) flattened: `embed` is one index_add over these."""
        tok, patch, weight = [], [], []
        for p, words in enumerate(words_per_patch):
            for w in words:
                ids = self.ids(w)
                tok += ids
                patch += [p] * len(ids)
                weight += [1.0 / len(ids)] * len(ids)
        return torch.tensor(tok), torch.tensor(patch), torch.tensor(weight)

    def embed(self, words_per_patch: list[list[str]], table: torch.Tensor) -> torch.Tensor:
        """[patches, hidden]: per patch, the sum over its words of the mean of their token embeddings."""
        tok, patch, weight = self.index(words_per_patch)
        rows = table[tok] * weight[:, None].to(table.dtype)
        return torch.zeros(len(words_per_patch), table.shape[1], dtype=table.dtype,
                           device=table.device).index_add(0, patch.to(table.device), rows)


def word_rows(embedder: WordEmbedder, words: tuple[str, ...]) -> list[int]:
    """The one token of each of `words` (two or more), or a ValueError naming the word that is not one."""
    if len(words) < 2:
        raise ValueError(f"--separate {','.join(words)}: name two words or more")
    rows = []
    for word in words:
        ids = embedder.ids(word)
        if len(ids) != 1:
            raise ValueError(f"--separate {word}: the tokenizer splits it into {len(ids)} tokens; name one-token words")
        rows.append(ids[0])
    return rows


def separate_word_rows(table: torch.Tensor, embedder: WordEmbedder, words: tuple[str, ...], radius: float,
                       generator: torch.Generator) -> None:
    """Move the embedding rows of `words` (one token each) `radius` apart from their mean, in place.

    Words said in the same places of every text ("Is the red circle large or small?") can end with nearly
    one row: in the world-LM of cdee5a7 the rows of "large" and "small" had cosine 0.98 and differed by
    0.21 in norm (two colours' rows: 1.56), too little for a patch's size to be read (held-out size 0.64,
    one-object scenes 0.63). Each row keeps the words' mean (what they share), plus its own random offset.
    """
    rows = word_rows(embedder, words)
    with torch.no_grad():
        mean = table[rows].float().mean(0)
        offsets = torch.randn(len(rows), table.shape[1], generator=generator)
        offsets -= offsets.mean(0)  # the mean stays where it was
        offsets *= radius / offsets.norm(dim=1, keepdim=True)
        table[rows] = (mean + offsets).to(table.dtype)
