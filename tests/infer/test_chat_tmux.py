"""`llava15 chat` in a real terminal: tmux drives it (attach an image, ask, get a reply, /clear, /exit)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid

import pytest


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


def _wait_for(session: str, predicate, timeout: float = 180.0) -> str:
    deadline = time.monotonic() + timeout
    pane = ""
    while time.monotonic() < deadline:
        pane = _tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", session)
        if predicate(pane):
            return pane
        time.sleep(0.3)
    raise AssertionError(f"timed out; the pane shows:\n{pane}")


def test_chat_under_tmux(tiny_llava_dir, tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install -y tmux)")
    from PIL import Image

    image = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (220, 20, 20)).save(image)
    other = tmp_path / "blue.png"
    Image.new("RGBA", (30, 50), (0, 0, 250, 128)).save(other)
    cmd = shlex.join([sys.executable, "-m", "llava15.cli", "chat", "--model", str(tiny_llava_dir), "--image",
                      str(image), "--temperature", "0", "--max-new-tokens", "6", "--device", "cpu"])
    session = f"llava15-chat-{uuid.uuid4().hex[:8]}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "50",
                    f"{cmd}; echo CHAT-EXITED-$?; sleep 30"], check=True)
    try:
        _wait_for(session, lambda p: "USER> " in p and "(attached" in p)
        subprocess.run(["tmux", "send-keys", "-t", session, "What is in the image?", "Enter"], check=True)
        pane = _wait_for(session, lambda p: p.count("USER> ") >= 2)
        assert "ASSISTANT> " in pane
        subprocess.run(["tmux", "send-keys", "-t", session, f"/image {other}", "Enter"], check=True)
        _wait_for(session, lambda p: p.count("(attached") >= 2)
        subprocess.run(["tmux", "send-keys", "-t", session, "And this one?", "Enter"], check=True)
        _wait_for(session, lambda p: p.count("USER> ") >= 4)
        subprocess.run(["tmux", "send-keys", "-t", session, "/clear", "Enter"], check=True)
        _wait_for(session, lambda p: "(conversation cleared)" in p)
        subprocess.run(["tmux", "send-keys", "-t", session, "/exit", "Enter"], check=True)
        pane = _wait_for(session, lambda p: "CHAT-EXITED-" in p, timeout=60)
        assert "CHAT-EXITED-0" in pane, pane
        assert "Traceback" not in pane, pane
    finally:
        _tmux("kill-session", "-t", session)
