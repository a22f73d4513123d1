"""Image preprocessing equals the original CLIP pipeline (images.json) and accepts any PIL mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_spec import SPEC
from PIL import Image

from llava15.data import preprocess_image
from llava15.data.images import expand2square, load_image, pad_color


def _check(t: torch.Tensor, want: dict) -> None:
    x = t.double()
    assert list(t.shape) == want["shape"] and t.dtype == torch.float32
    assert abs(x.mean().item() - want["mean"]) < 1e-4
    assert abs(x.std().item() - want["std"]) < 1e-4
    assert abs(x.min().item() - want["min"]) < 1e-4 and abs(x.max().item() - want["max"]) < 1e-4
    for c in range(3):
        assert abs(x[c].mean().item() - want["channel_mean"][c]) < 1e-4
        assert abs(x[c].std().item() - want["channel_std"][c]) < 1e-4
    for v in want["values_at"]:
        assert abs(x[v["c"], v["y"], v["x"]].item() - v["v"]) < 1e-4, v
    rows = x.mean(dim=2).numpy()
    assert np.abs(rows - np.asarray(want["row_means"])).max() < 1e-4


def test_images_fixture(official):
    data = official("images")
    for name, spec in data["images"].items():
        path = SPEC / "fixtures" / spec.get("fixture_file", f"images/{name}")
        if not path.exists():
            pytest.skip(f"{path} missing")
        image = load_image(path)
        if spec.get("derived") not in (None, "None"):
            pytest.skip("derived image recipe not reproduced here")
        assert list(image.size) == spec["original_size_wh"]
        assert list(pad_color()) == spec["pad_background_rgb"]
        assert list(expand2square(image, pad_color()).size) == spec["padded_size_wh"]
        _check(preprocess_image(image, "pad"), spec["pad"])
        _check(preprocess_image(image, "square"), spec["square_no_pad"])


def test_pad_offsets_and_colour():
    img = Image.new("RGB", (20, 10), (255, 0, 0))
    sq = expand2square(img, pad_color())
    assert sq.size == (20, 20) and sq.getpixel((0, 4)) == (122, 116, 104) and sq.getpixel((0, 5)) == (255, 0, 0)
    assert sq.getpixel((0, 15)) == (122, 116, 104) and sq.getpixel((0, 14)) == (255, 0, 0)
    tall = expand2square(Image.new("RGB", (5, 10), (0, 255, 0)), pad_color())
    assert tall.getpixel((1, 0)) == (122, 116, 104) and tall.getpixel((2, 0)) == (0, 255, 0)
    padded = preprocess_image(Image.new("RGB", (40, 10), (0, 0, 0)), "pad", size=16)
    assert torch.allclose(padded[:, 0, 0], torch.tensor([-0.011254520, -0.011196004, -0.001332894]), atol=1e-5)


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "L", "CMYK", "I;16", "1", "I", "F"])
def test_any_mode_to_rgb(mode, tmp_path):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8))
    img = rgb.convert(mode) if mode not in ("I;16", "I", "F") else rgb.convert("L").convert(mode)
    ext = "tiff" if mode in ("CMYK", "I;16", "I", "F") else "png"
    img.save(tmp_path / f"x.{ext}")
    out = load_image(tmp_path / f"x.{ext}")
    assert out.mode == "RGB" and out.size == (50, 30)
    for m in ("pad", "square", "resize"):
        t = preprocess_image(out, m, size=28)
        assert t.shape == (3, 28, 28) and torch.isfinite(t).all()


def test_rgba_drops_alpha_like_original():
    img = Image.new("RGBA", (4, 4), (200, 10, 10, 0))
    assert load_image(img).getpixel((0, 0)) == (200, 10, 10)


def test_16bit_is_scaled_not_clipped():
    arr = np.full((4, 4), 32768, dtype=np.uint16)
    assert load_image(Image.fromarray(arr)).getpixel((0, 0))[0] in (127, 128)
