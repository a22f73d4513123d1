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
- `final_text(tokenizer, ids, stop_strings) -> str`: the reply exactly as the original eval code
  returns it (`tokenizer.decode(new_ids, skip_special_tokens=True).strip()`), cut before the first of
  the template's / request's stop strings.
- `TextStream(tokenizer, stop_strings, byte_ids=None)`: incremental detokenization of one row. `push(id)` returns
  the newly safe text and whether a stop string ended the row; `finish()` ends it with `final_text`.
  Text that could be the start of a stop string, an incomplete UTF-8 character, an open run of
  byte-fallback pieces or trailing whitespace is held back, so the concatenated deltas equal the
  final text (the one exception, which a stream cannot take back, is an earlier delta that the
  final decode renders differently).
"""

from __future__ import annotations

import dataclasses
import re
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


_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def byte_piece_ids(tokenizer) -> frozenset[int]:
    """Ids of SentencePiece byte-fallback pieces (`<0x41>`); empty for byte-level BPE vocabularies."""
    return frozenset(i for piece, i in tokenizer.get_vocab().items() if _BYTE_PIECE.fullmatch(piece))


def final_text(tokenizer, ids: list[int], stop_strings: tuple[str, ...] | list[str] = ()) -> str:
    """The reply as the original eval code returns it: `tokenizer.decode(ids, skip_special_tokens=True)`
    stripped, cut before the first stop string (searched after leading whitespace, as the stream does).
    `ids` are the new tokens without the stop id that ended the row."""
    text = tokenizer.decode(ids, skip_special_tokens=True).lstrip()
    cut = min((at for s in stop_strings if s and (at := text.find(s)) != -1), default=len(text))
    return text[:cut].strip()


class TextStream:
    """Incremental detokenization with stop strings for one row."""

    def __init__(self, tokenizer, stop_strings: tuple[str, ...] | list[str],
                 byte_ids: frozenset[int] | None = None) -> None:
        self.tokenizer = tokenizer
        self.byte_ids = byte_piece_ids(tokenizer) if byte_ids is None else byte_ids
        self.stops = [s for s in stop_strings if s]
        self.ids: list[int] = []
        self.text = ""  # decoded text so far, cut at a stop string when one was found
        self.stable = ""  # the part of `text` that later tokens cannot re-render
        self.out = ""  # text released so far
        self.result: str | None = None  # the final reply, once finished
        self._run = 0  # ids[_run:] are an open run of byte-fallback pieces

    @property
    def emitted(self) -> int:
        return len(self.out)

    def push(self, token_id: int) -> tuple[str, bool]:
        self.ids.append(token_id)
        if token_id not in self.byte_ids:
            self._run = len(self.ids)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()
        stopped = False
        for stop in self.stops:
            at = text.find(stop, max(0, len(self.out) - len(stop)))
            if at != -1:
                text, stopped = text[:at], True
        self.text = text
        # A run of byte pieces that is not valid UTF-8 decodes to one U+FFFD per byte, including bytes
        # already shown as characters ("7k" then "\ufffd\ufffd\ufffd"): hold the run back until it ends.
        self.stable = text
        if self._run < len(self.ids) and not stopped:
            self.stable = self.tokenizer.decode(self.ids[:self._run], skip_special_tokens=True).lstrip()
        if stopped:
            return self.finish(), True
        return self.release(final=False), False

    def set_text(self, text: str) -> None:
        """Text produced outside `push` (the JSON constraint's validated text)."""
        self.text = self.stable = text

    def finish(self, text: str | None = None) -> str:
        """End the row: the reply is `text`, or `final_text` of the pushed ids (the original's decode);
        returns what was not yet released. Deltas add up to the reply unless an earlier delta was
        rendered differently by the final decode (a stream cannot take text back)."""
        self.result = final_text(self.tokenizer, self.ids, self.stops) if text is None else text
        if not self.result.startswith(self.out):
            return ""
        return self.release(final=True)

    @property
    def final_text(self) -> str:
        return self.out if self.result is None else self.result

    def release(self, final: bool) -> str:
        text = self.result if final and self.result is not None else self._safe_prefix()
        if len(text) <= len(self.out):
            return ""
        delta = text[len(self.out):]
        self.out += delta
        return delta

    def _safe_prefix(self) -> str:
        text = self.stable
        if text.endswith("\ufffd"):  # half of a multi-byte character
            text = text.rstrip("\ufffd")
        hold = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    hold = max(hold, n)
                    break
        return text[: len(text) - hold].rstrip()
