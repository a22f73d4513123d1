"""The web UI in headless Chromium against a real server: load, attach an image, send, see a streamed reply."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


def test_webui_streams_a_reply_about_an_attached_image(server, tmp_path):
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="python package 'playwright' is not installed")
    from PIL import Image

    image = tmp_path / "shapes.png"
    Image.new("RGB", (64, 48), (30, 120, 220)).save(image)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS,
                                     headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.goto(server.url + "/")
            page.fill("#api-key", server.api_key)
            page.dispatch_event("#api-key", "change")
            page.wait_for_function(f"document.getElementById('model').textContent === {server.model!r}")
            page.fill("#temperature", "0")
            page.fill("#max-tokens", "8")
            assert not page.is_visible("#attachment")
            page.set_input_files("#file-input", str(image))
            page.wait_for_selector("#attachment", state="visible")
            page.fill("#prompt", "What colour is this picture?")
            page.click("#send")
            page.wait_for_selector("#status[data-state=done]", timeout=120_000)
            bubble = page.locator(".msg.assistant").last
            assert int(bubble.get_attribute("data-chunks")) >= 1
            assert bubble.get_attribute("data-finish") in ("stop", "length")
            assert page.locator(".msg.user img").count() == 1
            assert page.locator(".msg.error").count() == 0
            assert not page.is_visible("#attachment")  # the image went with the message
            page.screenshot(path=str(ARTIFACTS / "webui.png"))
        finally:
            browser.close()
    assert (ARTIFACTS / "webui.png").stat().st_size > 1000
