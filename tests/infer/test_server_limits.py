"""`llava15 serve` as a newcomer runs it: its name, its key out of `ps`, refused fields, settable limits."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import httpx
import psutil
import pytest
from PIL import Image


def _post(server, body: dict | bytes) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + "/v1/chat/completions", content=content, timeout=60,
                      headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"})


def _image_body(server, url: str) -> dict:
    return {"model": server.model, "max_tokens": 2, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What?"}]}]}


def _png_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels, with no pixel data (a decompression bomb's shape)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_served_name_and_key_from_the_environment(server):
    models = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {server.api_key}"}).json()
    assert [m["id"] for m in models["data"]] == [server.model] == ["tiny-llava"]
    assert not any(server.api_key in part for part in psutil.Process(server.proc.pid).cmdline())
    assert httpx.get(server.url + "/v1/models").status_code == 401
    wrong = _post(server, {"model": "llava", "messages": [{"role": "user", "content": "x"}]})
    assert wrong.status_code == 404 and server.model in wrong.json()["error"]["message"]


@pytest.mark.parametrize("field,value", [
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    ("tool_choice", "required"), ("logit_bias", {"1": 5}), ("top_k", 5), ("logprobs", True), ("n", 2),
])
def test_unsupported_fields_are_refused_naming_the_field(server, field, value):
    r = _post(server, {"model": server.model, "messages": [{"role": "user", "content": "x"}], field: value})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field and field in err["message"]


def test_harmless_fields_are_accepted(server):
    body = {"model": server.model, "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
            "user": "someone", "tools": [], "tool_choice": "none", "logprobs": False, "n": 1}
    assert _post(server, body).status_code == 200


def test_decompression_bomb_is_refused_as_one(server):
    r = _post(server, _image_body(server, _png_url(_png_header_only(60_000, 60_000))))
    assert r.status_code == 400 and r.json()["error"]["code"] == "decompression_bomb"
    assert "decompression bomb" in r.json()["error"]["message"]
    assert server.proc.poll() is None


def test_image_and_body_limits_are_the_flags(server):
    buf = io.BytesIO()
    Image.new("L", (2100, 2000), 0).save(buf, "PNG")  # 4.2 M pixels > --max-image-pixels 4 M
    r = _post(server, _image_body(server, _png_url(buf.getvalue())))
    assert r.status_code == 400 and str(server.max_image_pixels) in r.json()["error"]["message"]
    big = json.dumps({"model": server.model, "messages": [{"role": "user", "content": "x" * server.max_request_bytes}]})
    r = _post(server, big.encode())
    assert r.status_code == 413 and str(server.max_request_bytes) in r.json()["error"]["message"]
