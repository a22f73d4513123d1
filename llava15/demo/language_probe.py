"""Retained language ability: does the multimodal model still answer general questions as its base LM?

Issue #8's measure for the SmolLM2 showcase. `PROBE` is a fixed list of 20 general-knowledge questions
(capitals, arithmetic, units, opposites, science, authorship), each ending in "Answer in one sentence."
so that greedy replies are short and end on their own. The questions were chosen so that the base
SmolLM2-135M-Instruct answers every one of them correctly; each carries the `keys` (accepted spellings
of the correct fact) used to decide whether two replies say the same thing.

- `base_lm_answers(llm_dir)`: the reference. The plain causal LM folder (the dequantised SmolLM2) run
  by transformers alone, `tokenizer.apply_chat_template` + greedy `generate`, i.e. what a user of the
  base LM sees, independent of llava15's engine and templates. The rows run as one left-padded batch
  (32 decode steps instead of 20 x 32 on a CPU).
- `model_answers(checkpoint)`: the llava15 checkpoint, text-only, through `llava15.infer.engine`
  (greedy) with the checkpoint's own template, or `template=` (stage 1's checkpoint is saved with
  `plain`; its LM is the untouched base LM, so asked with `chatml` it must score 1.0: a check of the
  measurement itself, which the showcase reports).
- `same_answer(item, base, new)` and `retained_language(base_answers, new_answers) -> float` (share of
  the questions answered "the same"). "The same" is decided on normalised text (NFKC, lowercase,
  words of letters/digits only) in this order:
    1. the two normalised replies are equal: same;
    2. the base reply contains one of the item's keys: same iff the new reply contains one too
       (a key matches as a whole-word sequence, so "5" is not found in "15"). Rewording ("Paris." vs
       "The capital of France is Paris.") counts as the same; a different fact does not;
    3. the base reply contains no key (a base model that answers some question wrongly): same iff the
       new reply contains the base reply's first three content words (words not in the question and
       not in `STOPWORDS`): the same wrong fact still counts as retained.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SUFFIX = " Answer in one sentence."
MAX_NEW_TOKENS = 32


@dataclass(frozen=True)
class ProbeItem:
    question: str
    keys: tuple[str, ...]  # accepted forms of the correct fact, lowercase words


def _q(question: str, *keys: str) -> ProbeItem:
    return ProbeItem(question + SUFFIX, keys)


PROBE: tuple[ProbeItem, ...] = (
    _q("What is the capital of France?", "paris"),
    _q("What is the capital of Japan?", "tokyo"),
    _q("What is the capital of Germany?", "berlin"),
    _q("What is the capital of the United Kingdom?", "london"),
    _q("What is the capital of Italy?", "rome"),
    _q("What is 2 + 3?", "5", "five"),
    _q("How many days are in a week?", "7", "seven"),
    _q("What is the chemical symbol for water?", "h2o"),
    _q("What is the opposite of hot?", "cold"),
    _q("What is the plural of mouse?", "mice"),
    _q("What language is spoken in Brazil?", "portuguese"),
    _q("What is the largest ocean on Earth?", "pacific"),
    _q("Who wrote Romeo and Juliet?", "shakespeare"),
    _q("What gas do plants absorb from the air?", "carbon dioxide", "co2"),
    _q("What do bees make?", "honey"),
    _q("Who painted the Mona Lisa?", "leonardo", "da vinci"),
    _q("What is the boiling point of water in Celsius?", "100", "one hundred"),
    _q("In which country are the pyramids of Giza?", "egypt"),
    _q("How many legs does a dog have?", "4", "four"),
    _q("What is the currency of Japan?", "yen"),
)

STOPWORDS = frozenset(
    "a an the is are was were be been it its this that these those of in on at to for from by with and or "
    "but as which who what where when how there their they he she his her i you we our your my me "
    "also approximately about very often typically usually actually known called answer".split())


def normalize(text: str) -> list[str]:
    """Lowercase words of letters and digits (NFKC first, so full-width digits and ligatures fold)."""
    return re.findall(r"[^\W_]+", unicodedata.normalize("NFKC", text).lower())


def _contains(words: list[str], phrase: str) -> bool:
    target = normalize(phrase)
    n = len(target)
    return n > 0 and any(words[i:i + n] == target for i in range(len(words) - n + 1))


def mentions_key(item: ProbeItem, reply: str) -> bool:
    """Does `reply` state the item's correct fact (one of its keys, as whole words)?"""
    words = normalize(reply)
    return any(_contains(words, k) for k in item.keys)


def content_words(item: ProbeItem, reply: str, limit: int = 3) -> list[str]:
    asked = set(normalize(item.question))
    return [w for w in normalize(reply) if w not in asked and w not in STOPWORDS][:limit]


def same_answer(item: ProbeItem, base: str, new: str) -> bool:
    """Does `new` say what `base` said about `item`? (rules in the module docstring)"""
    base_words, new_words = normalize(base), normalize(new)
    if base_words == new_words:
        return True
    if mentions_key(item, base):
        return mentions_key(item, new)
    key = content_words(item, base)
    return bool(key) and all(w in new_words for w in key)


def retained_language(base_answers: Sequence[str], new_answers: Sequence[str],
                      probe: Sequence[ProbeItem] = PROBE) -> float:
    """Share of `probe` questions whose new answer is the same as the base LM's (0-1)."""
    if not (len(base_answers) == len(new_answers) == len(probe)):
        raise ValueError(f"retained_language: {len(probe)} probe questions but {len(base_answers)} base and "
                         f"{len(new_answers)} new answers")
    same = [same_answer(item, b, n) for item, b, n in zip(probe, base_answers, new_answers)]
    return sum(same) / len(same)


def base_lm_answers(llm_dir: str | Path, probe: Sequence[ProbeItem] = PROBE,
                    max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    """Greedy replies of the plain causal LM in `llm_dir`, with its tokenizer's own chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llm_dir, padding_side="left")
    if tok.chat_template is None:
        raise ValueError(f"{llm_dir}: the tokenizer has no chat template; the language probe needs one")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=torch.float32).eval()
    prompts = [tok.apply_chat_template([{"role": "user", "content": it.question}], tokenize=False,
                                       add_generation_prompt=True) for it in probe]
    # the template already starts with its special tokens: adding BOS again would change the prompt
    batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    return [t.strip() for t in tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)]


def model_answers(checkpoint: str | Path, probe: Sequence[ProbeItem] = PROBE, template: str | None = None,
                  max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    """Greedy text-only replies of a llava15 checkpoint through the engine (its template, or `template`)."""
    from llava15.infer.engine import load_generation_bundle

    bundle = load_generation_bundle(str(checkpoint))
    if template is not None:
        bundle.template = template  # the engine is built lazily, on the first generate
    replies = bundle.generate([[{"role": "user", "content": it.question}] for it in probe],
                              max_new_tokens=max_new_tokens, temperature=0.0, batch_size=len(probe))
    return [r.strip() for r in replies]
