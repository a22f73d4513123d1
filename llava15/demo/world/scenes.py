"""Scene model of the synthetic world: what is in an image, how it is sampled, and how it is drawn.

A scene is a 3x3 grid of square cells (the grid is `grid` pixels wide) on a plain background. Objects
(shape x color x size) sit one per cell with a small jitter; a rendered word fills a whole grid row.
One scene in two is not square: the canvas is `grid // 8` pixels wider (or taller), the grid centred
on it, so boxes relative to the padded square (how the original data normalises them) differ from
boxes relative to the image.

Why the geometry is what it is (the demo's tower sees 96 px in 32-px patches, one per cell): objects
fill 60% / 90% of a cell with a jitter of a quarter of the free space, and the band is narrow and
centred, so after `pad` preprocessing an object stays inside its cell's patch. With a quarter-cell
band on one side, 45% / 80% objects and the full jitter, objects straddled patches: trained on 8,000
scenes, the tower recognised 30% of the shapes on padded images and 79% on square ones (now 97%
overall after 16,000 scenes).

Contract:
- `sample_scene(rng, scene_id, image, grid, ...)` is a pure function of the `random.Random` state.
- `draw_scene(scene)` is pixel-exact and deterministic: aliased drawing and PIL's bitmap font (no
  FreeType, whose rendering differs between versions). Every shape fills its bounding box exactly, so
  `Item.bbox` is the tight box of its pixels; a word's `bbox` is the tight box of its glyph pixels.
- `Scene.padded_box(bbox)` gives `[x1, y1, x2, y2]` as fractions of the padded square, 2 decimals.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from llava15.demo.world.words import BACKGROUNDS, COLORS, SHAPES, SIZES, words_up_to

ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
GLYPH_WIDTH = 6  # PIL's default bitmap font: every glyph cell is 6 x 11 pixels
GLYPH_HEIGHT = 11
MIN_CONTRAST = 100.0  # RGB distance between an object or word color and the background


def position_name(row: int, col: int) -> str:
    """Short-answer name of a grid cell: "top left", "top", "center", "right", ..."""
    if row == 1 and col == 1:
        return "center"
    if row == 1:
        return COLS[col]
    if col == 1:
        return ROWS[row]
    return f"{ROWS[row]} {COLS[col]}"


@dataclass(frozen=True)
class Item:
    """One shape in one cell. `bbox` is in image pixels, `x2`/`y2` exclusive."""

    shape: str
    color: str
    size: str
    row: int
    col: int
    bbox: tuple[int, int, int, int]

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def position(self) -> str:
        return position_name(self.row, self.col)


@dataclass(frozen=True)
class Word:
    """A rendered word filling grid row `row`; `origin` is where its glyph cells start."""

    text: str
    color: str
    row: int
    origin: tuple[int, int]
    bbox: tuple[int, int, int, int]

    @property
    def position(self) -> str:
        return ROWS[self.row]


@dataclass(frozen=True)
class Scene:
    """Everything an image shows; all text about the image is generated from this."""

    id: str
    image: str  # path relative to the image folder of the file it belongs to
    width: int
    height: int
    background: str
    objects: tuple[Item, ...]
    words: tuple[Word, ...]
    font_scale: int

    def padded_box(self, bbox: tuple[int, int, int, int]) -> list[float]:
        """`bbox` as fractions of the square the image is padded to (centred, like `expand2square`)."""
        side = max(self.width, self.height)
        dx, dy = (side - self.width) // 2, (side - self.height) // 2
        x1, y1, x2, y2 = bbox
        return [round((x1 + dx) / side, 2), round((y1 + dy) / side, 2),
                round((x2 + dx) / side, 2), round((y2 + dy) / side, 2)]

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        """The inverse of `to_dict` (a line of the world's `scenes.jsonl`)."""
        return cls(d["id"], d["image"], d["width"], d["height"], d["background"],
                   tuple(Item(o["shape"], o["color"], o["size"], o["row"], o["col"], tuple(o["bbox"]))
                         for o in d["objects"]),
                   tuple(Word(w["text"], w["color"], w["row"], tuple(w["origin"]), tuple(w["bbox"]))
                         for w in d["words"]),
                   d["font_scale"])

    def to_dict(self) -> dict:
        """JSON-ready description (`dataclasses.asdict` is 10x slower: it deep-copies every field)."""
        return {"id": self.id, "image": self.image, "width": self.width, "height": self.height,
                "background": self.background, "font_scale": self.font_scale,
                "objects": [{"shape": o.shape, "color": o.color, "size": o.size, "row": o.row, "col": o.col,
                             "position": o.position, "bbox": list(o.bbox)} for o in self.objects],
                "words": [{"text": w.text, "color": w.color, "row": w.row, "position": w.position,
                           "origin": list(w.origin), "bbox": list(w.bbox)} for w in self.words]}


def contrasting_colors(background: str) -> tuple[str, ...]:
    """Object colors that stand out on `background` (all of them for the shipped palettes)."""
    bg = BACKGROUNDS[background]
    return tuple(c for c, rgb in COLORS.items() if math.dist(rgb, bg) >= MIN_CONTRAST)


def font_scale(grid: int) -> int:
    """Integer upscaling of the bitmap font: glyphs of 12 x 22 pixels on a 96-pixel grid."""
    return max(1, grid // 48)


def max_word_chars(grid: int) -> int:
    return (grid - 4) // (GLYPH_WIDTH * font_scale(grid))


def sample_scene(rng: random.Random, scene_id: str, image: str, grid: int, *,
                 objects: tuple[int, int] = (2, 5), words: tuple[float, float, float] = (0.4, 0.4, 0.2),
                 ) -> Scene:
    """Sample a scene: background, canvas shape, 0-2 word rows, then `objects` (min, max) shapes.

    `words` are the probabilities of 0, 1 and 2 rendered words. (color, shape) pairs are unique in a
    scene, so "the red circle" always names one object.
    """
    if grid < 24:
        raise ValueError(f"synthetic scenes need a grid of at least 24 pixels, got image_size={grid}")
    cell = grid // 3
    band = grid // 8
    aspect = rng.choice(("square", "square", "wide", "tall"))
    width = grid + (band if aspect == "wide" else 0)
    height = grid + (band if aspect == "tall" else 0)
    ox, oy = (width - grid) // 2, (height - grid) // 2
    background = rng.choice(tuple(BACKGROUNDS))
    palette = contrasting_colors(background)

    n_words = rng.choices((0, 1, 2), weights=words)[0]
    word_rows = sorted(rng.sample(range(3), n_words))
    free = [(r, c) for r in range(3) if r not in word_rows for c in range(3)]
    lo, hi = objects
    cells = sorted(rng.sample(free, rng.randint(min(lo, len(free)), min(hi, len(free)))))
    pairs = rng.sample([(c, s) for c in palette for s in SHAPES], len(cells))
    items = []
    for (row, col), (color, shape) in zip(cells, pairs):
        size = rng.choice(SIZES)
        d = round(cell * (0.9 if size == "large" else 0.6))
        slack = max(0, (cell - d) // 4)
        x1 = ox + col * cell + (cell - d) // 2 + rng.randint(-slack, slack)
        y1 = oy + row * cell + (cell - d) // 2 + rng.randint(-slack, slack)
        items.append(Item(shape, color, size, row, col, (x1, y1, x1 + d, y1 + d)))

    scale = font_scale(grid)
    vocab = words_up_to(max_word_chars(grid))
    word_colors = rng.sample(palette, n_words)
    placed = []
    for row, text, color in zip(word_rows, rng.sample(vocab, n_words), word_colors):
        w, h = len(text) * GLYPH_WIDTH * scale, GLYPH_HEIGHT * scale
        x = ox + rng.randint(2, grid - w - 2)
        y = oy + row * cell + (cell - h) // 2
        gx1, gy1, gx2, gy2 = _glyph_mask(text, scale).getbbox()
        placed.append(Word(text, color, row, (x, y), (x + gx1, y + gy1, x + gx2, y + gy2)))
    return Scene(scene_id, image, width, height, background, tuple(items), tuple(placed), scale)


@functools.lru_cache(maxsize=4096)
def _glyph_mask(text: str, scale: int) -> Image.Image:
    """White-on-black mask of `text` in PIL's bitmap font, upscaled by `scale` (nearest: stays crisp)."""
    font = ImageFont.load_default_imagefont()
    mask = Image.new("L", (len(text) * GLYPH_WIDTH, GLYPH_HEIGHT), 0)
    ImageDraw.Draw(mask).text((0, 0), text, font=font, fill=255)
    if scale > 1:
        mask = mask.resize((mask.width * scale, mask.height * scale), Image.Resampling.NEAREST)
    return mask


def _unit_polygon(shape: str) -> list[tuple[float, float]]:
    """Vertices in the unit square; each polygon touches all four sides, so it fills its box."""
    if shape == "triangle":
        return [(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)]
    if shape == "diamond":
        return [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)]
    if shape == "cross":
        a, b = 1 / 3, 2 / 3
        return [(a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b), (0, a), (a, a)]
    if shape == "star":
        pts = [(r * math.cos(math.radians(-90 + 36 * k)), r * math.sin(math.radians(-90 + 36 * k)))
               for k, r in zip(range(10), (1.0, 0.4) * 5)]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        return [((x - min(xs)) / (max(xs) - min(xs)), (y - min(ys)) / (max(ys) - min(ys))) for x, y in pts]
    raise ValueError(f"no polygon for shape {shape!r}")


def draw_scene(scene: Scene) -> Image.Image:
    """Render `scene` as an RGB image of `scene.width` x `scene.height` pixels."""
    image = Image.new("RGB", (scene.width, scene.height), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for item in scene.objects:
        x1, y1, x2, y2 = item.bbox
        box = (x1, y1, x2 - 1, y2 - 1)  # PIL boxes are inclusive
        rgb = COLORS[item.color]
        if item.shape == "circle":
            draw.ellipse(box, fill=rgb)
        elif item.shape == "square":
            draw.rectangle(box, fill=rgb)
        else:
            w, h = box[2] - box[0], box[3] - box[1]
            draw.polygon([(x1 + u * w, y1 + v * h) for u, v in _unit_polygon(item.shape)], fill=rgb)
    for word in scene.words:
        mask = _glyph_mask(word.text, scene.font_scale)
        image.paste(COLORS[word.color], (*word.origin, word.origin[0] + mask.width,
                                         word.origin[1] + mask.height), mask)
    return image
