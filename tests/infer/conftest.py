"""A real `llava15 serve` process on 127.0.0.1 serving the tiny model, shared by the server and web UI tests.

It runs with the API key in `LLAVA15_API_KEY`, a served model name and lowered image and body limits."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

API_KEY = "test-key-123"
MAX_TOKENS_LIMIT = 64
SERVED_NAME = "tiny-llava"
MAX_IMAGE_PIXELS = 4_000_000
MAX_REQUEST_BYTES = 16_000_000


@dataclass
class Server:
    url: str
    model: str
    proc: subprocess.Popen
    image_dir: Path
    log: Path
    api_key: str = API_KEY
    max_tokens_limit: int = MAX_TOKENS_LIMIT
    max_image_pixels: int = MAX_IMAGE_PIXELS
    max_request_bytes: int = MAX_REQUEST_BYTES


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(tiny_llava_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from PIL import Image

    image_dir = tmp_path_factory.mktemp("allowed")
    Image.new("RGB", (32, 24), (10, 200, 30)).save(image_dir / "green.png")
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    port = _free_port()
    cmd = [sys.executable, "-m", "llava15.cli", "serve", "--model", str(tiny_llava_dir), "--host", "127.0.0.1",
           "--port", str(port), "--served-model-name", SERVED_NAME, "--allowed-image-dir", str(image_dir),
           "--max-tokens-limit", str(MAX_TOKENS_LIMIT), "--max-image-pixels", str(MAX_IMAGE_PIXELS),
           "--max-request-bytes", str(MAX_REQUEST_BYTES), "--device", "cpu"]
    env = {**os.environ, "LLAVA15_API_KEY": API_KEY}  # the key travels in the environment, not in `ps`
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            pytest.fail(f"llava15 serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"llava15 serve did not come up in 180 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    yield Server(url, SERVED_NAME, proc, image_dir, log)
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
