"""Decoding settings, next-token selection and stop handling for the engine.

Contract:
- `DecodingParams` (frozen): `max_new_tokens`, `temperature` (0 = greedy), `top_p`, `stop` (extra stop
  strings), `json` (constrain the output to one JSON object), `seed`, `ignore_eos` (benchmarks).
  `DecodingParams.from_kwargs(**kw)` accepts the names users know (`max_tokens`, `response_format`
  as "json"/"json_object"/{"type": "json_object"}, `stop` as a string or list) and rejects unknown
  ones with the list of known names.
- `select_tokens(logits, params, generators) -> list[int]`: one token per row; greedy rows take the
  argmax, sampled rows use temperature + top-p with the row's own generator (so a seeded request
  gives the same text whatever it is batched with).
- `TextStream(tokenizer, stop_strings)`: incremental detokenization of one row. `push(id)` returns
  the newly safe text and whether a stop string ended the row. Text that could be the start of a
  stop string, an incomplete UTF-8 character or trailing whitespace is held back, so the
  concatenated deltas equal the final, stripped text exactly (the original answers are stripped).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DecodingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    json: bool = False
    seed: int | None = None
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if not 0.0 <= float(self.temperature) <= 100.0:
            raise ValueError(f"temperature must be in [0, 100], got {self.temperature!r}")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop strings must be non-empty strings, got {list(self.stop)!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @classmethod
    def from_kwargs(cls, **kw) -> DecodingParams:
        if "max_tokens" in kw:
            kw["max_new_tokens"] = kw.pop("max_tokens")
        if "response_format" in kw:
            kw["json"] = _is_json_format(kw.pop("response_format"))
        if isinstance(kw.get("stop"), str):
            kw["stop"] = (kw["stop"],)
        elif kw.get("stop") is None:
            kw.pop("stop", None)
        else:
            kw["stop"] = tuple(kw["stop"])
        if kw.get("top_p") is None:
            kw.pop("top_p", None)
        if kw.get("temperature") is None:
            kw.pop("temperature", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kw) - known)
        if unknown:
            raise TypeError(f"unknown decoding option(s) {unknown}; known: {sorted(known)} "
                            "(also max_tokens, response_format)")
        return cls(**kw)


def _is_json_format(fmt) -> bool:
    if fmt is None:
        return False
    if isinstance(fmt, dict):
        fmt = fmt.get("type")
    if fmt in ("json", "json_object"):
        return True
    if fmt in ("text", None):
        return False
    raise ValueError(f"response_format must be 'text' or 'json_object', got {fmt!r}")


def make_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def sample_top_p(logits: torch.Tensor, temperature: float, top_p: float,
                 generator: torch.Generator | None) -> int:
    """Sample one id from a 1-D logits row with temperature and nucleus (top-p) filtering."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token is always kept)
        keep = (torch.cumsum(sorted_probs, 0) - sorted_probs) < top_p
        sorted_probs = sorted_probs * keep
        pick = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(order[pick])
    return int(torch.multinomial(probs, 1, generator=generator))


def select_tokens(logits: torch.Tensor, params: list[DecodingParams],
                  generators: list[torch.Generator | None]) -> list[int]:
    """Next token per row of `logits [B, V]`: one batched argmax for greedy rows (and JSON rows,
    whose token the constraint picks afterwards), top-p sampling for the others."""
    greedy = logits.argmax(dim=-1).tolist()
    return [greedy[i] if p.greedy or p.json else sample_top_p(logits[i], p.temperature, p.top_p, generators[i])
            for i, p in enumerate(params)]


class TextStream:
    """Incremental detokenization with stop strings for one row."""

    def __init__(self, tokenizer, stop_strings: tuple[str, ...] | list[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stop_strings if s]
        self.ids: list[int] = []
        self.text = ""  # decoded text so far, cut at a stop string when one was found
        self.out = ""  # text released so far; the reply is exactly the concatenation of deltas

    @property
    def emitted(self) -> int:
        return len(self.out)

    def push(self, token_id: int) -> tuple[str, bool]:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()
        stopped = False
        for stop in self.stops:
            at = text.find(stop, max(0, len(self.out) - len(stop)))
            if at != -1:
                text, stopped = text[:at], True
        self.text = text
        return self.release(final=stopped), stopped

    def finish(self) -> str:
        """Text not yet released (the end of a row that stopped on a stop id or on length)."""
        return self.release(final=True)

    @property
    def final_text(self) -> str:
        return self.out

    def release(self, final: bool) -> str:
        # Decoding is prefix-stable for valid UTF-8; invalid byte sequences (random models) can change
        # earlier characters, which a stream cannot take back, so offsets are what count.
        text = self.text.rstrip() if final else self._safe_prefix()
        if len(text) <= len(self.out):
            return ""
        delta = text[len(self.out):]
        self.out += delta
        return delta

    def _safe_prefix(self) -> str:
        text = self.text
        if text.endswith("\ufffd"):  # half of a multi-byte character
            text = text.rstrip("\ufffd")
        hold = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    hold = max(hold, n)
                    break
        return text[: len(text) - hold].rstrip()
