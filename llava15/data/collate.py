"""Batches: each `<image>` id expanded to the vision tower's token count, then padded or packed.

`expand_image_tokens` turns each image id into `num_image_tokens` copies (labels -100 there).
`Collator(...)(samples)` takes dataset samples (`input_ids`, `labels`, `pixel_values` [n,3,S,S] or
None) and returns `input_ids`, `labels`, and either `attention_mask` (mode `pad`, side configurable)
or `position_ids` (mode `pack`, no attention mask: see packing.py for the `use_cache=False` rule),
plus `pixel_values` stacked in the order the image placeholders appear scanning rows top to bottom
(None when the batch has no image), `ids`, `num_samples` and `skipped` (bad records the dataset
replaced, reported from DataLoader workers).

Text-only batches and multi-GPU: with `pixel_values=None` transformers skips the vision tower and the
projector, so under FSDP/ZeRO-3 one rank would run different modules than the others and hang. The
collator cannot fix that alone; the training step should, when `pixel_values` is None, run the tower
and projector on one dummy image (`Collator.dummy_pixels()`) and add `0 * features.sum()` to the loss,
so every rank calls the same modules and the gradients stay exact.
"""

from __future__ import annotations

from typing import Any

import torch

from llava15.data.conversation import IGNORE_INDEX
from llava15.data.packing import pack_rows, plan_rows


def expand_image_tokens(input_ids: Any, labels: Any, image_token_id: int,
                        num_image_tokens: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Repeat every image id `num_image_tokens` times; the labels there are -100 (`labels` may be None:
    an inference prompt, whose expanded ids the engine feeds the model)."""
    ids = torch.as_tensor(input_ids, dtype=torch.long)
    is_image = ids == image_token_id
    repeats = torch.where(is_image, num_image_tokens, 1)
    out_ids = torch.repeat_interleave(ids, repeats)
    if labels is None:
        return out_ids, None
    lab = torch.as_tensor(labels, dtype=torch.long)
    return out_ids, torch.repeat_interleave(torch.where(is_image, IGNORE_INDEX, lab), repeats)


class Collator:
    """Callable for `DataLoader(collate_fn=...)` (see module docstring)."""

    def __init__(self, pad_token_id: int, image_token_id: int, num_image_tokens: int, mode: str = "pad",
                 padding_side: str = "right", pack_tokens: int | None = None, image_size: int = 336,
                 max_length: int | None = None) -> None:
        if mode not in ("pad", "pack"):
            raise ValueError(f"mode must be 'pad' or 'pack', got {mode!r}")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.pad_token_id, self.image_token_id = pad_token_id, image_token_id
        self.num_image_tokens, self.mode, self.padding_side = num_image_tokens, mode, padding_side
        self.pack_tokens, self.image_size, self.max_length = pack_tokens, image_size, max_length

    def dummy_pixels(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """One all-zero image, to keep the vision path running on text-only batches (see docstring)."""
        return torch.zeros(1, 3, self.image_size, self.image_size, dtype=dtype)

    def __call__(self, samples: list[dict]) -> dict[str, Any]:
        samples = [s for s in samples if s is not None]
        if not samples:
            raise ValueError("empty batch")
        ids, labels = zip(*(self._expand(s) for s in samples))
        if self.mode == "pack":
            starts = [i for i, y in enumerate(labels) if len(y) and int(y[0]) != IGNORE_INDEX]
            if starts:  # the previous sample's last token would be trained to predict this one's start
                raise ValueError(f"sample {samples[starts[0]].get('id')!r} starts with a supervised token; "
                                 "packing needs a masked first token (BOS or a prompt)")
            budget = self.pack_tokens or max(len(x) for x in ids)
            rows = plan_rows([len(x) for x in ids], budget)
            batch = pack_rows(list(ids), list(labels), rows, self.pad_token_id)
            order = [i for row in rows for i in row]
        else:
            batch = self._pad(list(ids), list(labels))
            order = list(range(len(samples)))
        pixels = [samples[i]["pixel_values"] for i in order if samples[i].get("pixel_values") is not None]
        batch["pixel_values"] = torch.cat(pixels) if pixels else None
        batch["ids"] = [samples[i].get("id") for i in order]
        batch["num_samples"] = len(samples)
        batch["skipped"] = [x for s in samples for x in s.get("skipped", [])]
        return batch

    def _expand(self, sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Expanded ids/labels, cut to `max_length` as the original collator + model do, never in an image."""
        ids, labels = expand_image_tokens(sample["input_ids"], sample["labels"], self.image_token_id,
                                          self.num_image_tokens)
        if self.max_length is not None and len(ids) > self.max_length:
            if int((ids[:self.max_length] == self.image_token_id).sum()) % self.num_image_tokens:
                raise ValueError(f"sample {sample.get('id')!r}: cutting {len(ids)} tokens to max_length "
                                 f"{self.max_length} would split an image's {self.num_image_tokens} tokens")
            ids, labels = ids[:self.max_length], labels[:self.max_length]
        return ids, labels

    def _pad(self, ids: list[torch.Tensor], labels: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        width = max(len(x) for x in ids)
        out_ids = torch.full((len(ids), width), self.pad_token_id, dtype=torch.long)
        out_labels = torch.full((len(ids), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for r, (x, y) in enumerate(zip(ids, labels)):
            span = slice(width - len(x), width) if self.padding_side == "left" else slice(0, len(x))
            out_ids[r, span], out_labels[r, span], mask[r, span] = x, y, 1
        return {"input_ids": out_ids, "labels": out_labels, "attention_mask": mask}
