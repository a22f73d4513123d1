"""The one in-memory conversation format every part of llava15 speaks.

`Conversation(id, messages, images)`: `messages` are `Message(role, content)` with role `system`, `user`
or `assistant`; `content` may hold `<image>` markers, one per entry of `images` (paths relative to the
image root, in marker order). `DataError` is the single exception for a record that must be rejected;
its message names the source file, the record and the field, and `.reason` is a short kind label used
for counting (`missing_image`, `image_count`, `unknown_role`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IMAGE_TOKEN = "<image>"
IGNORE_INDEX = -100  # the label of every position the loss skips (PyTorch cross_entropy's default)
ROLES = ("system", "user", "assistant")


class DataError(Exception):
    """A record that cannot be used; `reason` is a stable kind label, the message says why."""

    def __init__(self, message: str, *, record_id: str | None = None, field: str | None = None,
                 reason: str = "invalid", source: str | None = None) -> None:
        where = ", ".join(p for p in (
            f"file {source}" if source else "",
            f"record {record_id!r}" if record_id is not None else "",
            f"field {field!r}" if field else "") if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.record_id = record_id
        self.field = field
        self.reason = reason
        self.detail = message
        self.source = source

    def with_source(self, source: str) -> DataError:
        """The same error naming the data file (for errors raised where the file is not known)."""
        if self.source is not None:
            return self
        return DataError(self.detail, record_id=self.record_id, field=self.field, reason=self.reason,
                         source=source)

    def __reduce__(self):  # keep the fields across DataLoader worker processes
        return (_rebuild_error, (self.detail, self.record_id, self.field, self.reason, self.source))


def _rebuild_error(detail: str, record_id: str | None, field: str | None, reason: str,
                   source: str | None) -> DataError:
    return DataError(detail, record_id=record_id, field=field, reason=reason, source=source)


@dataclass
class Message:
    role: str
    """`system`, `user` or `assistant`."""
    content: str
    """Text; `<image>` marks where an image goes."""


@dataclass
class Conversation:
    id: str
    messages: list[Message]
    images: list[Any] = field(default_factory=list)
    """Image paths relative to the image root (or already-open PIL images), in marker order."""

    @property
    def num_image_markers(self) -> int:
        return sum(m.content.count(IMAGE_TOKEN) for m in self.messages)


def move_images_to_front(conv: Conversation) -> Conversation:
    """The original `preprocess_multimodal`: a turn holding one `<image>` gets it moved to its front.

    The marker is removed, the text stripped, and `"<image>\\n"` prepended (`"Describe.\\n<image>"` ->
    `"<image>\\nDescribe."`). Applied to every turn of a record with images, as the original does.
    Beyond the original: a turn with several markers (multi-image, interleaved) is left as written,
    because collapsing them to one, as the original does, loses images.
    """
    if not conv.images:
        return conv
    messages = []
    for m in conv.messages:
        if m.content.count(IMAGE_TOKEN) == 1:
            text = m.content.replace(IMAGE_TOKEN, "").strip()
            m = Message(m.role, (IMAGE_TOKEN + "\n" + text).strip())
        messages.append(m)
    return Conversation(conv.id, messages, list(conv.images))
