"""Text-only conversations (the ShareGPT part of the mixture) and text-only multiple-choice problems
(ScienceQA's problems without an image): facts about words, shapes and colors, correct by construction.
"""

from __future__ import annotations

import random

from llava15.demo.world.text import QA, a, capitalize, plural
from llava15.demo.world.words import SHAPES, WORDS

_SIDES = {"triangle": 3, "square": 4, "diamond": 4, "cross": 12, "star": 10}
_MIXES = {("blue", "yellow"): "green", ("red", "yellow"): "orange", ("red", "blue"): "purple",
          ("red", "white"): "pink", ("black", "white"): "gray"}


def text_only_turns(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """`n` (question, answer) turns about words, shapes and colors, with no image."""
    makers = list(TEXT_QUESTIONS.values())
    rng.shuffle(makers)
    return [(qa.question, qa.sentence) for qa in (makers[i % len(makers)](rng) for i in range(n))]


def text_only_qa(rng: random.Random, kinds: tuple[str, ...] = ("sides", "mix", "letters", "first")) -> QA:
    """One text-only question with a short answer and its answer domain (for multiple choice)."""
    return TEXT_QUESTIONS[rng.choice(kinds)](rng)


def _t_spell(rng: random.Random) -> QA:
    w = rng.choice(WORDS)
    return QA("spell", f'How do you spell the word "{w}"?', "-".join(w), f'The word "{w}" is spelled {"-".join(w)}.')


def _t_letters(rng: random.Random) -> QA:
    w = rng.choice(WORDS)
    return QA("letters", f'How many letters are in the word "{w}"?', str(len(w)),
              f'The word "{w}" has {plural(len(w), "letter")}.', tuple(str(k) for k in range(2, 10)))


def _t_first(rng: random.Random) -> QA:
    w = rng.choice(WORDS)
    return QA("first", f'What is the first letter of "{w}"?', w[0], f'The first letter of "{w}" is "{w[0]}".',
              tuple("abcdefghijklmnopqrstuvwxyz"))


def _t_order(rng: random.Random) -> QA:
    ws = rng.sample(WORDS, 3)
    return QA("order", f"Put these words in alphabetical order: {', '.join(ws)}.", ", ".join(sorted(ws)),
              f"In alphabetical order they are: {', '.join(sorted(ws))}.")


def _t_sides(rng: random.Random) -> QA:
    s = rng.choice(SHAPES)
    domain = ("0", "3", "4", "5", "6", "8", "10", "12")
    if s == "circle":
        return QA("sides", "How many sides does a circle have?", "0",
                  "A circle has no straight sides; its edge is one curve.", domain)
    return QA("sides", f"How many sides does {a(s)} have?", str(_SIDES[s]),
              f"{capitalize(a(s))} has {plural(_SIDES[s], 'side')}.", domain)


def _t_mix(rng: random.Random) -> QA:
    (c1, c2), out = rng.choice(sorted(_MIXES.items()))
    return QA("mix", f"What color do you get when you mix {c1} and {c2}?", out, f"Mixing {c1} and {c2} gives {out}.",
              ("green", "orange", "purple", "pink", "gray", "brown", "black"))


TEXT_QUESTIONS = {"spell": _t_spell, "letters": _t_letters, "first": _t_first, "order": _t_order,
                  "sides": _t_sides, "mix": _t_mix}
