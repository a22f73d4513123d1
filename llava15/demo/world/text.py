"""Text generated from a scene: questions with short and sentence answers, captions, descriptions,
multiple choice and region references (text-only conversations: `text_only.py`).

Every answer is read off the `Scene`, so it is correct by construction. Questions only ask what the
scene answers unambiguously ((color, shape) pairs are unique; "the circle" is asked only when one circle
exists). Each generator takes a `random.Random` and is deterministic given its state.

The response-format prompts are the paper's strings (Table 7 / Table 8), ASCII apostrophe as in the
official files. The region prompts are written the way the original 665K data words them
("Please provide a short description for this region: [x1, y1, x2, y2].").
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from llava15.demo.world.scenes import ROWS, Item, Scene, Word, position_name
from llava15.demo.world.words import BACKGROUNDS, COLORS, SHAPES, SIZES, WORDS

IMAGE = "<image>"  # the image marker of the LLaVA record format
SHORT_ANSWER = "Answer the question using a single word or phrase."
MULTIPLE_CHOICE = "Answer with the option's letter from the given choices directly."
ONE_SENTENCE_CAPTION = "Provide a one-sentence caption for the provided image."
REGION_TO_TEXT = "Provide a short description for this region."
TEXT_TO_REGION = "Provide the bounding box coordinate of the region this sentence describes."
FORMAT_PROMPTS = (SHORT_ANSWER, MULTIPLE_CHOICE, ONE_SENTENCE_CAPTION, REGION_TO_TEXT, TEXT_TO_REGION)

CAPTION_INSTRUCTIONS = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
    "Create a compact narrative representing the image presented.",
)
DETAIL_INSTRUCTIONS = (
    "Describe the following image in detail.",
    "Provide a detailed description of the given image.",
    "Give an elaborate explanation of the image you see.",
    "Explain the visual content of the image in great detail.",
    "What do you see in this image? Describe everything.",
    "Analyze the image in a comprehensive and detailed manner.",
)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
LETTERS = "ABCDE"


def region_question(box: list[float]) -> str:
    """The 665K wording of REGION_TO_TEXT, with the box."""
    return f"Please provide a short description for this region: {box}."


def grounding_question(expression: str) -> str:
    """The 665K wording of TEXT_TO_REGION, with the referring expression."""
    return f"Please provide the bounding box coordinate of the region this sentence describes: {expression}."


def a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def where(position: str) -> str:
    """ "top left" -> "in the top left corner", "top" -> "at the top", "left" -> "on the left"."""
    if " " in position:
        return f"in the {position} corner"
    if position in ("center", "middle"):
        return f"in the {position}"
    return f"at the {position}" if position in ROWS else f"on the {position}"


def plurals(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "x")) else "s")


def plural(n: int, noun: str) -> str:
    return f"{NUMBER_WORDS[n] if n <= 10 else n} {noun if n == 1 else plurals(noun)}"


def listing(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def capitalize(s: str) -> str:
    return s[:1].upper() + s[1:]


@dataclass(frozen=True)
class QA:
    """A question with its short answer (VQA style) and its sentence answer (conversation style)."""

    kind: str  # color | shape | count | exists | where | what_at | size | background | ocr_*
    question: str
    short: str
    sentence: str
    options: tuple[str, ...] = ()  # the answer's domain, for multiple choice and distractors


def _unique(items: list[Item], key) -> list[Item]:
    values = [key(i) for i in items]
    return [i for i, v in zip(items, values) if values.count(v) == 1]


def _qa_color(scene: Scene, rng: random.Random) -> QA | None:
    cands = _unique(list(scene.objects), lambda i: i.shape)
    if not cands:
        return None
    o = rng.choice(cands)
    return QA("color", f"What color is the {o.shape}?", o.color, f"The {o.shape} is {o.color}.", tuple(COLORS))


def _qa_shape(scene: Scene, rng: random.Random) -> QA | None:
    cands = _unique(list(scene.objects), lambda i: i.color)
    if not cands:
        return None
    o = rng.choice(cands)
    return QA("shape", f"What shape is the {o.color} object?", o.shape,
              f"The {o.color} object is {a(o.shape)}.", SHAPES)


def _qa_count(scene: Scene, rng: random.Random) -> QA:
    domain = tuple(str(n) for n in range(1, 7))
    objs = scene.objects
    mode = rng.choice(("all", "color", "shape"))
    if mode == "all":
        n = len(objs)
        return QA("count", "How many shapes are there?", str(n), f"There are {plural(n, 'shape')}.", domain)
    attr = rng.choice([o.color if mode == "color" else o.shape for o in objs])
    n = sum((o.color if mode == "color" else o.shape) == attr for o in objs)
    noun = f"{attr} shape" if mode == "color" else attr
    q = f"How many {plurals(noun)} are there?"
    return QA("count", q, str(n), f"There {'is' if n == 1 else 'are'} {plural(n, noun)}.", domain)


def absent_pairs(scene: Scene) -> list[tuple[str, str]]:
    present = {(o.color, o.shape) for o in scene.objects}
    return [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]


def _qa_exists(scene: Scene, rng: random.Random) -> QA:
    if rng.random() < 0.5:
        o = rng.choice(scene.objects)
        return QA("exists", f"Is there {a(o.name)} in the image?", "yes",
                  f"Yes, there is {a(o.name)} {where(o.position)}.", ("yes", "no"))
    # Hard negatives: share the color or the shape of an object that is there.
    near = [(c, s) for c, s in absent_pairs(scene) if any(c == o.color or s == o.shape for o in scene.objects)]
    c, s = rng.choice(near)
    return QA("exists", f"Is there {a(f'{c} {s}')} in the image?", "no",
              f"No, there is no {c} {s} in the image.", ("yes", "no"))


def _qa_where(scene: Scene, rng: random.Random) -> QA:
    o = rng.choice(scene.objects)
    positions = tuple(position_name(r, c) for r in range(3) for c in range(3))
    return QA("where", f"Where is the {o.name}?", o.position, f"The {o.name} is {where(o.position)}.", positions)


def _qa_what_at(scene: Scene, rng: random.Random) -> QA:
    o = rng.choice(scene.objects)
    return QA("what_at", f"What shape is {where(o.position)}?", o.shape,
              f"There is {a(f'{o.size} {o.name}')} {where(o.position)}.", SHAPES)


def _qa_size(scene: Scene, rng: random.Random) -> QA:
    o = rng.choice(scene.objects)
    return QA("size", f"Is the {o.name} large or small?", o.size, f"The {o.name} is {o.size}.", SIZES)


def _qa_background(scene: Scene, rng: random.Random) -> QA:
    return QA("background", "What color is the background?", scene.background,
              f"The background is {scene.background}.", tuple(BACKGROUNDS))


def _qa_ocr_word(scene: Scene, rng: random.Random) -> QA | None:
    """Read a word, named by its row or color when there are two (TextVQA / OCR-VQA style)."""
    if not scene.words:
        return None
    w = rng.choice(scene.words)
    if len(scene.words) == 1:
        return QA("ocr_word", "What word is written in the image?", w.text,
                  f'The word "{w.text}" is written in the image.', WORDS)
    if rng.random() < 0.5:
        return QA("ocr_word", f"What word is written {where(w.position)}?", w.text,
                  f'The word written {where(w.position)} is "{w.text}".', WORDS)
    return QA("ocr_word", f"What word is written in {w.color}?", w.text,
              f'The word written in {w.color} is "{w.text}".', WORDS)


def _qa_ocr_color(scene: Scene, rng: random.Random) -> QA | None:
    if not scene.words:
        return None
    w = rng.choice(scene.words)
    return QA("ocr_color", f'What color is the word "{w.text}"?', w.color,
              f'The word "{w.text}" is written in {w.color}.', tuple(COLORS))


def _qa_ocr_count(scene: Scene, rng: random.Random) -> QA | None:
    if not scene.words:
        return None
    n = len(scene.words)
    return QA("ocr_count", "How many words are written in the image?", str(n),
              f"There {'is' if n == 1 else 'are'} {plural(n, 'word')} written in the image.", ("1", "2", "3"))


OCR_QUESTIONS = {"ocr_word": _qa_ocr_word, "ocr_color": _qa_ocr_color, "ocr_count": _qa_ocr_count}
VISUAL_QUESTIONS = {"color": _qa_color, "shape": _qa_shape, "count": _qa_count, "exists": _qa_exists,
                    "where": _qa_where, "what_at": _qa_what_at, "size": _qa_size,
                    "background": _qa_background}


def sample_qas(scene: Scene, rng: random.Random, n: int, kinds: tuple[str, ...] | None = None,
               ocr: bool = False) -> list[QA]:
    """Up to `n` questions of distinct wording about `scene`: visual ones, or about its words if `ocr`.

    Kinds cycle in a shuffled order, so `n` questions cover `n` different kinds when there are enough.
    """
    table = OCR_QUESTIONS if ocr else VISUAL_QUESTIONS
    names = list(kinds or table)
    rng.shuffle(names)
    out: list[QA] = []
    tries = 0
    while len(out) < n and tries < 4 * n + 8:
        qa = table[names[tries % len(names)]](scene, rng)
        tries += 1
        if qa is not None and all(qa.question != q.question for q in out):
            out.append(qa)
    return out


def describe_object(o: Item, with_position: bool = True) -> str:
    phrase = a(f"{o.size} {o.name}")
    return f"{phrase} {where(o.position)}" if with_position else phrase


def describe_word(w: Word) -> str:
    return f'the word "{w.text}" in {w.color}'


def caption(scene: Scene) -> str:
    """Stage-1 caption: one short lowercase line listing everything, like the 558K BLIP captions."""
    parts = [describe_object(o) for o in scene.objects] + [describe_word(w) for w in scene.words]
    return f"{listing(parts)} on a {scene.background} background"


def one_sentence_caption(scene: Scene) -> str:
    """TextCaps-style: one sentence that names the words in the image."""
    words = listing([f'"{w.text}"' for w in scene.words])
    things = listing([a(o.name) for o in scene.objects])
    noun = "word" if len(scene.words) == 1 else "words"
    return f"A {scene.background} picture with the {noun} {words} written next to {things}."


def detailed_description(scene: Scene) -> str:
    """LLaVA-Instruct-style detailed description: several sentences, every object and word."""
    n = len(scene.objects)
    shape = "portrait" if scene.height > scene.width else "landscape" if scene.width > scene.height else "square"
    sents = [f"The image is a {shape} picture with a plain {scene.background} background and "
             f"{plural(n, 'shape')} arranged on a three by three grid."]
    for o in scene.objects:
        sents.append(capitalize(f"{where(o.position)} there is {a(f'{o.size} {o.name}')}."))
    for w in scene.words:
        sents.append(f'The word "{w.text}" is written in {w.color} letters across the {w.position} row.')
    if not scene.words:
        sents.append("There is no text in the image.")
    return " ".join(sents)


def referring_expression(item: Item | Word) -> str:
    if isinstance(item, Word):
        return f'the word "{item.text}"'
    return f"{item.size} {item.name}"


def region_description(item: Item | Word) -> str:
    """RefCOCO-style short answer: capitalised phrase with a period."""
    return capitalize(referring_expression(item)) + "."


def multiple_choice(qa: QA, rng: random.Random, k: int = 4) -> tuple[list[str], int]:
    """Options (correct + distractors from the answer's domain, at most `k`) and the correct index."""
    distractors = [o for o in qa.options if o != qa.short]
    opts = [qa.short] + rng.sample(distractors, min(k - 1, len(distractors)))
    rng.shuffle(opts)
    return opts, opts.index(qa.short)


def format_options(question: str, options: list[str]) -> str:
    return "\n".join([question] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)])


def rotations(options: list[str], answer: int) -> list[tuple[list[str], int]]:
    """One option order per option: rotated right by k, so the answer visits every letter once."""
    n = len(options)
    return [([options[(i - k) % n] for i in range(n)], (answer + k) % n) for k in range(n)]
