"""What one request to `llava15 serve` may ask for: body size, images, pixels, tokens, image sources.

`Limits` is a plain dataclass (no heavy imports) so the command line can show its defaults; the server
(`infer.protocol`, `infer.server`) enforces it, answering a 4xx that names the limit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Limits:
    max_request_bytes: int = 32 * 1024 * 1024
    """Largest request body (413 above it)."""
    max_images: int = 8
    """Images in one request."""
    max_image_pixels: int = 4096 * 4096
    """Largest width x height; read from the image header and refused before any pixel is decoded."""
    max_image_bytes: int = 20 * 1024 * 1024
    """Largest encoded image (a data: URL's payload, a file, a download)."""
    max_tokens: int = 2048
    """Largest `max_tokens` a request may ask for."""
    default_max_tokens: int = 512
    """`max_tokens` of a request that names none (capped by `max_tokens`)."""
    allowed_image_dir: str | None = None
    """`file://` images are read only under this folder (None: refused)."""
    allow_remote_images: bool = False
    """Fetch `http(s)://` image URLs."""
