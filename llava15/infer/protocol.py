"""OpenAI Chat Completions schemas, and their translation into llava15 conversations.

Contract:
- `APIError(status, message, type, code, param)`: every rejected request; `.body()` is OpenAI's error
  shape `{"error": {"message", "type", "param", "code"}}`.
- `ChatRequest` (pydantic): the request fields we honour; `parse_request(raw_bytes, limits)` turns a
  body into one, or raises `APIError` 400 naming the field. Fields that would change the reply and that
  we do not implement (`tools`, `logit_bias`, `top_k`, ... in `UNSUPPORTED_FIELDS`; `logprobs`, `n>1`)
  are refused with 400 naming the field, never silently ignored.
- `to_conversation(req, limits, fetch) -> (messages, images, DecodingParams)`: text and `image_url`
  parts become `Message`s with `<image>` markers (each image first in its message, then the text, as
  LLaVA-1.5 was trained); images come from `data:` URLs, `file://` paths under the allowed folder, or
  `http(s)` when remote images are allowed. Limits (`Limits`) bound body size, images per request,
  pixels per image (read from the header, before decoding: a decompression bomb is refused as one) and
  `max_tokens`.
- `completion_body`, `chunk_body`: response and stream-chunk JSON.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llava15.data.conversation import IMAGE_TOKEN, Message
from llava15.infer.decoding import DecodingParams
from llava15.infer.limits import Limits


class APIError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=False)


class ImageURL(_Strict):
    url: str
    detail: str | None = None


class ContentPart(_Strict):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatRequest(_Strict):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1)
    seed: int | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


# Fields that change what a reply is or how it is sampled: silently ignoring them would answer a
# different question than the one asked. Metadata fields (`user`, `metadata`, `store`, ...) are ignored.
UNSUPPORTED_FIELDS = {
    "tools": "no tool calling", "tool_choice": "no tool calling", "functions": "no function calling",
    "function_call": "no function calling", "parallel_tool_calls": "no tool calling",
    "logit_bias": "no logit bias", "top_logprobs": "no logprobs", "audio": "no audio output",
    "modalities": "text output only", "prediction": "no predicted outputs", "best_of": "one sample per request",
    "echo": "no prompt echo", "suffix": "no suffix completion", "top_k": "top_p only", "min_p": "top_p only",
    "repetition_penalty": "no repetition penalty", "guided_json": "use response_format json_object",
    "guided_regex": "no regex constraint", "guided_choice": "no choice constraint",
    "guided_grammar": "no grammar constraint", "reasoning_effort": "not a reasoning model",
    "web_search_options": "no web search",
}


def parse_request(raw: bytes, limits: Limits) -> ChatRequest:
    import json

    if len(raw) > limits.max_request_bytes:
        raise APIError(413, f"request body is {len(raw)} bytes; the limit is {limits.max_request_bytes}",
                       code="request_too_large")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object", code="invalid_json")
    for name, what in UNSUPPORTED_FIELDS.items():
        if name in data and data[name] not in (None, False, [], {}, "none"):
            raise APIError(400, f"{name!r} is not supported by this server ({what}); remove the field",
                           param=name, code="unsupported_field")
    try:
        req = ChatRequest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise APIError(400, f"invalid field {where!r}: {err['msg']}", param=where) from None
    _check_supported(req, limits)
    return req


def _check_supported(req: ChatRequest, limits: Limits) -> None:
    if req.n not in (None, 1):
        raise APIError(400, f"n={req.n} is not supported; only n=1", param="n")
    if req.logprobs:
        raise APIError(400, "logprobs are not supported", param="logprobs")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name):
            raise APIError(400, f"{name} is not supported (only 0)", param=name)
    if req.response_format is not None and req.response_format.type == "json_schema":
        raise APIError(400, "response_format json_schema is not supported; use json_object "
                       "(output guaranteed to be one JSON object)", param="response_format")
    stops = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
    if len(stops) > 4 or any(not s for s in stops):
        raise APIError(400, "stop must be at most 4 non-empty strings", param="stop")
    mt = requested_max_tokens(req, limits)
    if mt > limits.max_tokens:
        raise APIError(400, f"max_tokens is {mt}; this server allows at most {limits.max_tokens}",
                       param="max_tokens", code="max_tokens_too_large")
    if req.messages[-1].role != "user":
        raise APIError(400, f"the last message must be from the user, got {req.messages[-1].role!r}",
                       param="messages")


def requested_max_tokens(req: ChatRequest, limits: Limits) -> int:
    return req.max_completion_tokens or req.max_tokens or min(limits.default_max_tokens, limits.max_tokens)


Fetch = Callable[[str], Awaitable[bytes]]


async def to_conversation(req: ChatRequest, limits: Limits, fetch: Fetch
                          ) -> tuple[list[Message], list[Image.Image], DecodingParams]:
    messages: list[Message] = []
    images: list[Image.Image] = []
    for i, m in enumerate(req.messages):
        parts = [ContentPart(type="text", text=m.content)] if isinstance(m.content, str) else (m.content or [])
        texts, n_images = [], 0
        for j, part in enumerate(parts):
            where = f"messages.{i}.content.{j}"
            if part.type == "text":
                if part.text is None:
                    raise APIError(400, f"{where}: a text part needs 'text'", param=where)
                if IMAGE_TOKEN in part.text:
                    raise APIError(400, f"{where}: text may not contain the reserved marker {IMAGE_TOKEN}; "
                                   "send images as image_url parts", param=where)
                texts.append(part.text)
            else:
                if part.image_url is None:
                    raise APIError(400, f"{where}: an image_url part needs 'image_url'", param=where)
                if m.role != "user":
                    raise APIError(400, f"{where}: images are only accepted in user messages", param=where)
                if len(images) >= limits.max_images:
                    raise APIError(400, f"more than {limits.max_images} images in one request", param=where,
                                   code="too_many_images")
                data = await load_image_bytes(part.image_url.url, limits, fetch, where)
                # decoding can take a while for large images: keep the event loop free
                images.append(await asyncio.to_thread(decode_image, data, limits, where))
                n_images += 1
        content = (IMAGE_TOKEN + "\n") * n_images + "\n".join(texts)
        messages.append(Message(m.role, content))
    fmt = req.response_format.type if req.response_format else None
    try:
        params = DecodingParams.from_kwargs(
            max_new_tokens=requested_max_tokens(req, limits),
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=req.top_p, stop=req.stop, seed=req.seed, response_format=fmt)
    except (ValueError, TypeError) as exc:
        raise APIError(400, str(exc)) from None
    if params.json and params.max_new_tokens < 2:
        raise APIError(400, "JSON mode needs max_tokens >= 2", param="max_tokens")
    return messages, images, params


async def load_image_bytes(url: str, limits: Limits, fetch: Fetch, where: str) -> bytes:
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or ";base64" not in header:
            raise APIError(400, f"{where}: data URLs must be base64 ('data:image/png;base64,...')", param=where,
                           code="invalid_image_url")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise APIError(400, f"{where}: the data URL is not valid base64", param=where,
                           code="invalid_base64") from None
    elif url.startswith("file://"):
        data = _read_allowed_file(url[len("file://"):], limits, where)
    elif url.startswith(("http://", "https://")):
        if not limits.allow_remote_images:
            raise APIError(400, f"{where}: remote image URLs are disabled on this server "
                           "(start it with --allow-remote-images)", param=where, code="remote_images_disabled")
        data = await fetch(url)
    else:
        raise APIError(400, f"{where}: unsupported image URL scheme in {url[:40]!r} "
                       "(use data:, file:// or http(s)://)", param=where, code="invalid_image_url")
    if len(data) > limits.max_image_bytes:
        raise APIError(400, f"{where}: image is {len(data)} bytes; the limit is {limits.max_image_bytes}",
                       param=where, code="image_too_large")
    return data


def _read_allowed_file(path: str, limits: Limits, where: str) -> bytes:
    if limits.allowed_image_dir is None:
        raise APIError(403, f"{where}: file:// images are disabled (start the server with "
                       "--allowed-image-dir DIR)", type="permission_error", param=where, code="forbidden_path")
    root = Path(os.path.realpath(limits.allowed_image_dir))
    target = Path(os.path.realpath(path))
    if root != target and root not in target.parents:
        raise APIError(403, f"{where}: {path!r} is outside the allowed image folder", type="permission_error",
                       param=where, code="forbidden_path")
    if not target.is_file():
        raise APIError(400, f"{where}: no such image file {path!r}", param=where, code="invalid_image_url")
    if target.stat().st_size > limits.max_image_bytes:
        raise APIError(400, f"{where}: image file exceeds {limits.max_image_bytes} bytes", param=where,
                       code="image_too_large")
    return target.read_bytes()


def decode_image(data: bytes, limits: Limits, where: str) -> Image.Image:
    """Open and fully decode an image, refusing oversized ones before decoding their pixels."""
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
    except Image.DecompressionBombError as exc:  # PIL's own guard: the header declares an absurd size
        raise APIError(400, f"{where}: refused as a decompression bomb ({exc})", param=where,
                       code="decompression_bomb") from None
    except Exception:  # PIL raises several types for non-images
        raise APIError(400, f"{where}: the data is not an image PIL can read", param=where,
                       code="invalid_image") from None
    if w * h > limits.max_image_pixels:
        bomb = " (a decompression bomb: a small file that decodes to a huge image)" \
            if len(data) * 64 < w * h else ""
        raise APIError(400, f"{where}: image is {w}x{h} = {w * h} pixels; the limit is {limits.max_image_pixels} "
                       f"(--max-image-pixels){bomb}", param=where,
                       code="decompression_bomb" if bomb else "image_too_large")
    try:
        img.load()
    except Exception as exc:
        raise APIError(400, f"{where}: the image could not be decoded ({type(exc).__name__})", param=where,
                       code="invalid_image") from None
    return img


def completion_body(rid: str, model: str, text: str, finish: str, prompt_tokens: int,
                    completion_tokens: int) -> dict:
    return {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish, "logprobs": None}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chunk_body(rid: str, model: str, delta: dict, finish: str | None = None, usage_: dict | None = None,
               choices: bool = True) -> dict:
    body = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}] if choices else []}
    if usage_ is not None:
        body["usage"] = usage_
    return body


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
