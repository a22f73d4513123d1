"""The synthetic world's fixed vocabularies: shapes, colors, backgrounds and the words it renders.

Everything here is data. Rendered words are common lowercase English words of 3-7 letters that are
neither color nor shape names, so "the word X" never collides with an object attribute.
"""

from __future__ import annotations

import functools

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross")

# Saturated object colors, far apart in RGB so a tiny model separates them at a glance.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 230),
    "yellow": (245, 225, 30),
    "orange": (250, 140, 0),
    "purple": (140, 40, 190),
    "pink": (250, 120, 200),
    "brown": (130, 75, 20),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}

# Muted mid-tone backgrounds; each keeps every object color at an RGB distance of at least 100.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "slate": (70, 90, 110),
    "sand": (190, 170, 120),
    "sage": (150, 170, 140),
}

SIZES: tuple[str, ...] = ("small", "large")

_WORDS = """
able acid actor adult agent alarm album alert alley amber angle ankle apple apron arena arrow
asset atlas attic audio award bacon badge bagel baker banjo barn basin batch beach beard beast
bench berry bike bird blade blank blend bloom board boat bonus book boot bottle brain brave bread
brick bridge broom brush bucket bunny butter cabin cable cactus cake camel camera candle candy
canoe canyon cargo carpet carrot castle cattle cave cedar chain chair chalk charm cheese cherry
chess chest chick chief child chimney chip choir cider cinema city clamp class clay cliff clock
cloth cloud clown coach coast cocoa coffee coin comet cookie coral corn cotton couch cougar cover
crab crane crate crown cruise crumb cup curtain cushion daisy dance dealer deer delta desert desk
dinner dish doctor dolphin donkey door dragon drain drawer dream dress drum duck eagle earth easel
echo elbow engine entry eraser fabric fair falcon farm feast feather fence ferry fiber field
finger fire flag flame flute foam focus forest fork fossil fountain fox frame frog fruit galaxy
game garage garden garlic gate ghost giant ginger glass glove goat gold grape grass guitar hammer
harbor harp hawk helmet hero hill honey hook horse hotel house igloo island ivory jacket jelly
jewel judge juice kayak kettle key kingdom kite kitten knife ladder lake lamp lantern laptop lemon
letter lion lizard lobster lock magnet mango maple market meadow melon mirror monkey moon motor
mouse muffin museum music nail needle nest noodle novel oak ocean olive onion orbit otter owl
oyster paddle palace panda paper parade parrot pasta peach peanut pearl pencil pepper piano
pickle pillow pilot pirate pizza planet plate pocket poem pond potato puppy puzzle quilt rabbit
radio rain raven ribbon river robot rocket roof rope sail salad salmon sandal saucer scarf
school season seed shell ship shoe shovel silver singer skate sled snail snake snow soap sock
sofa spoon spring stamp statue stone stove sugar summer sun swan sword table tablet tiger toast
tomato tower toy tractor train tree trophy truck trumpet tulip turkey turtle umbrella valley
vase violin wagon wallet walnut water whale wheat wheel window winter wizard wolf wood yacht zebra
"""

# Deduplicated, in first-seen order, so the list is stable across Python versions.
WORDS: tuple[str, ...] = tuple(dict.fromkeys(_WORDS.split()))


@functools.cache
def words_up_to(max_chars: int) -> tuple[str, ...]:
    """The rendered-word vocabulary limited to words that fit `max_chars` glyphs."""
    return tuple(w for w in WORDS if len(w) <= max_chars)
