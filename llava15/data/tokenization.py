"""Token ids and labels built together, segment by segment, token-exact with the original LLaVA.

The template cuts a conversation into `Segment(text, supervised)` pieces. The rendered prompt is split
at each `<image>` and every text chunk is tokenized on its own, exactly as the original
`tokenizer_image_token` does (so the stray `▁` pieces on both sides of an image are reproduced); one
image id joins the chunks and one BOS starts the row when the template asks for it. Each token is
labelled by the segment its first character belongs to (offset mapping; a prefix-tokenization fallback
covers tokenizers without offsets). With the Vicuna tokenizer this reproduces `preprocess_v1` /
`preprocess_plain` id for id and label for label, including `</s>USER`.

Where the original silently masks a whole sample (literal `</s>` or `<unk>`, empty answer), this
module raises `DataError` with the reason instead; a sample with no supervised token is never returned.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from llava15.data.conversation import (
    IGNORE_INDEX,
    IMAGE_TOKEN,
    Conversation,
    DataError,
    Message,
    move_images_to_front,
)
from llava15.data.templates import Segment, Template, get_template


@dataclass
class Encoded:
    input_ids: list[int]
    """Token ids; each image is ONE `image_token_id` (expanded by the collator)."""
    labels: list[int]
    """Same length; `-100` where the loss ignores the position."""
    num_images: int = 0
    truncated: bool = False

    def expanded_length(self, num_image_tokens: int) -> int:
        return len(self.input_ids) + self.num_images * (num_image_tokens - 1)


def _template(template: Template | str, tokenizer: Any) -> Template:
    return get_template(template, tokenizer) if isinstance(template, str) else template


def _chunk_tokens(tokenizer: Any, chunk: str, cuts: list[int]) -> tuple[list[int], list[int]]:
    """Ids of one text chunk and, per token, the char position that decides its segment."""
    if not chunk:
        return [], []
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [min(start, len(chunk) - 1) for start, _ in enc["offset_mapping"]]
    # No offsets: the tokens of chunk[:cut] must be a prefix of the chunk's tokens at every segment cut.
    ids = tokenizer(chunk, add_special_tokens=False)["input_ids"]
    owners, done = [], 0
    for cut in [c for c in cuts if 0 < c < len(chunk)] + [len(chunk)]:
        head = tokenizer(chunk[:cut], add_special_tokens=False)["input_ids"] if cut < len(chunk) else ids
        if ids[:len(head)] != head:
            raise DataError(f"a template segment boundary (char {cut}) falls inside a token", reason="template")
        owners += [cut - 1] * (len(head) - done)
        done = len(head)
    return ids, owners


def encode_segments(segments: list[Segment], tokenizer: Any, image_token_id: int,
                    bos: bool) -> tuple[list[int], list[int]]:
    """Ids and labels of rendered segments (see module docstring)."""
    text = "".join(s.text for s in segments)
    starts, flags, pos = [], [], 0
    for s in segments:  # only changes of supervision are boundaries (a prefix may not end mid-word)
        if not flags or flags[-1] != s.supervised:
            starts.append(pos)
            flags.append(s.supervised)
        pos += len(s.text)
    ids: list[int] = []
    labels: list[int] = []
    if bos and tokenizer.bos_token_id is not None:
        ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE_INDEX)
    offset = 0
    for k, chunk in enumerate(text.split(IMAGE_TOKEN)):
        if k:
            ids.append(image_token_id)
            labels.append(IGNORE_INDEX)
            offset += len(IMAGE_TOKEN)
        cuts = [st - offset for st in starts]
        chunk_ids, owners = _chunk_tokens(tokenizer, chunk, cuts)
        for tid, owner in zip(chunk_ids, owners):
            seg = bisect.bisect_right(starts, offset + owner) - 1
            ids.append(tid)
            labels.append(tid if flags[seg] else IGNORE_INDEX)
        offset += len(chunk)
    return ids, labels


def _forbidden_tokens(tokenizer: Any, template: Template) -> list[str]:
    """Special-token strings that must not appear literally in a message.

    The original turns a literal `</s>`/`<unk>` into a tokenization mismatch and drops the sample; we
    name it. A literal BOS (`<s>`) is kept, as the original trains on it.
    """
    specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
    specials |= {s for s in template.stop_strings if s.strip() and s.startswith("<")}
    specials -= {IMAGE_TOKEN, getattr(tokenizer, "bos_token", None), None, ""}
    return sorted(specials)


def encode_conversation(conv: Conversation, tokenizer: Any, template: Template | str, image_token_id: int,
                        max_length: int | None = None, num_image_tokens: int = 1) -> Encoded:
    """Training ids and labels of one conversation (raises `DataError` when it must be rejected).

    A single `<image>` in a turn is first moved to the turn's front (the original
    `preprocess_multimodal`). `max_length` counts each image as `num_image_tokens`; a longer sample is
    cut at the end as the original does, unless the cut would fall inside an image or leave no
    supervised token, in which case it is rejected (`too_long`).
    """
    tmpl = _template(template, tokenizer)

    def fail(msg: str, reason: str, field: str | None = None) -> DataError:
        return DataError(msg, record_id=conv.id, field=field, reason=reason)

    conv = move_images_to_front(conv)
    bad = _forbidden_tokens(tokenizer, tmpl)
    for i, m in enumerate(conv.messages):
        if m.role == "assistant" and not m.content.strip():
            raise fail("empty assistant answer", "empty_text", f"conversations[{i}].value")
        hit = next((t for t in bad if t in m.content), None)
        if hit:
            raise fail(f"text contains the literal special token {hit!r}, which the tokenizer would read "
                       "as a control token (the original silently drops such samples)", "special_token",
                       f"conversations[{i}].value")
    try:
        segments = tmpl.segments(conv.messages, add_generation_prompt=False)
    except DataError as exc:
        raise fail(exc.detail, exc.reason, exc.field) from None
    ids, labels = encode_segments(segments, tokenizer, image_token_id, tmpl.bos)
    num_images = ids.count(image_token_id)
    enc = Encoded(ids, labels, num_images)
    if max_length is not None and enc.expanded_length(num_image_tokens) > max_length:
        enc = _truncate(enc, image_token_id, num_image_tokens, max_length, fail)
    if all(label == IGNORE_INDEX for label in enc.labels):
        raise fail(f"no supervised token in {len(enc.input_ids)} tokens", "no_supervised")
    return enc


def _truncate(enc: Encoded, image_token_id: int, num_image_tokens: int, max_length: int, fail) -> Encoded:
    used = 0
    for k, tid in enumerate(enc.input_ids):
        cost = num_image_tokens if tid == image_token_id else 1
        if used + cost > max_length:
            if tid == image_token_id or image_token_id in enc.input_ids[k:]:
                raise fail(f"{enc.expanded_length(num_image_tokens)} tokens with images counted "
                           f"({enc.num_images} x {num_image_tokens}) exceed max_length {max_length} and "
                           "truncation would cut an image", "too_long")
            cut = Encoded(enc.input_ids[:k], enc.labels[:k], enc.num_images, truncated=True)
            if all(label == IGNORE_INDEX for label in cut.labels):
                raise fail(f"{enc.expanded_length(num_image_tokens)} tokens with images counted "
                           f"({enc.num_images} x {num_image_tokens}) exceed max_length {max_length} and no "
                           "supervised token is left after truncation", "too_long")
            return cut
        used += cost
    return enc


def encode_prompt(messages: list[Message], tokenizer: Any, template: Template | str,
                  image_token_id: int) -> list[int]:
    """Inference prompt ids (ending with the assistant header, e.g. `ASSISTANT:`)."""
    tmpl = _template(template, tokenizer)
    ids, _ = encode_segments(tmpl.segments(messages, add_generation_prompt=True), tokenizer,
                             image_token_id, tmpl.bos)
    return ids


def stop_token_ids(tokenizer: Any, template: Template | str) -> list[int]:
    """Ids that end generation: the template's single-token stop strings plus the tokenizer's EOS."""
    tmpl = _template(template, tokenizer)
    out: list[int] = []
    for s in tmpl.stop_strings:
        ids = tokenizer(s, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:  # a leading dummy-prefix piece (`▁`) is not part of the stop string
            head = tokenizer("x", add_special_tokens=False)["input_ids"]
            both = tokenizer("x" + s, add_special_tokens=False)["input_ids"]
            ids = both[len(head):] if both[:len(head)] == head else ids
        if len(ids) == 1 and ids[0] not in out:
            out.append(ids[0])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in out:
        out.append(tokenizer.eos_token_id)
    return out


def supervised_fraction(labels: Any, attention_mask: Any = None) -> float:
    """Share of real (non-padding) positions that carry a label; 0.0 means the batch teaches nothing."""
    import torch

    labels = torch.as_tensor(labels)
    real = torch.ones_like(labels, dtype=torch.bool) if attention_mask is None else torch.as_tensor(
        attention_mask).bool()
    total = int(real.sum())
    return float(((labels != IGNORE_INDEX) & real).sum()) / total if total else 0.0
