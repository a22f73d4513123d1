"""JSON-constrained decoding: the output is guaranteed to parse as one JSON object.

Contract:
- `JsonState` is an immutable pushdown automaton over characters for one JSON object (RFC 8259
  values inside; the top level must be an object, as OpenAI's `json_object` mode requires).
  `state.feed(text) -> JsonState | None` (None: the text would make the prefix invalid),
  `state.completion() -> str` (the shortest text that closes every open structure; feeding it one
  character at a time shortens it by exactly one each time), `state.done`.
- `TokenTable(tokenizer)` holds the text each token adds when appended to any output (computed once
  per tokenizer), and `JsonConstraint(table, max_new_tokens)` picks, for one row and one step, the
  best-ranked token that keeps the prefix valid **and** leaves enough budget to close everything:
  a token is allowed only when `len(completion(after)) <= tokens left after it`. Since every
  completion character exists as a single token (checked at construction), the row can always close
  in time, so the output parses even when `max_new_tokens` cuts it short.
  The row is finished as soon as the top-level object closes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

_WS = " \t\n\r"
_DIGITS = "0123456789"
_HEX = "0123456789abcdefABCDEF"
_ESCAPES = '"\\/bfnrt'
# Characters the completions use; each must be one token for the budget guarantee to hold.
_NEEDED = '{}[]":,0nrueals'


@dataclass(frozen=True)
class JsonState:
    stack: str = ""  # "o" object / "a" array, innermost last
    mode: str = "start"  # start, obj_first, obj_key, colon, value, arr_first, after, string, number, literal, done
    aux: str = ""  # string: "k"/"v" + escape state; number: sub-state; literal: remaining letters

    @property
    def done(self) -> bool:
        return self.mode == "done"

    def feed(self, text: str) -> JsonState | None:
        state: JsonState | None = self
        for ch in text:
            state = state._step(ch)
            if state is None:
                return None
        return state

    def _after_value(self) -> JsonState:
        return replace(self, mode="after" if self.stack else "done", aux="")

    def _open(self, ch: str) -> JsonState:
        if ch == "{":
            return JsonState(self.stack + "o", "obj_first")
        return JsonState(self.stack + "a", "arr_first")

    def _start_value(self, ch: str) -> JsonState | None:
        if ch in "{[":
            return self._open(ch)
        if ch == '"':
            return replace(self, mode="string", aux="v")
        if ch == "-":
            return replace(self, mode="number", aux="sign")
        if ch == "0":
            return replace(self, mode="number", aux="zero")
        if ch in _DIGITS:
            return replace(self, mode="number", aux="int")
        for word in ("true", "false", "null"):
            if ch == word[0]:
                return replace(self, mode="literal", aux=word[1:])
        return None

    def _close(self, ch: str) -> JsonState | None:
        if not self.stack or ch != ("}" if self.stack[-1] == "o" else "]"):
            return None
        return JsonState(self.stack[:-1], "after" if len(self.stack) > 1 else "done")

    def _step(self, ch: str) -> JsonState | None:  # noqa: C901 - one branch per automaton mode
        mode, aux = self.mode, self.aux
        if mode == "string":
            return self._string_step(ch)
        if mode == "number":
            nxt = _NUMBER.get(aux, {}).get(_char_class(ch))
            if nxt is not None:
                return replace(self, aux=nxt)
            if aux not in _NUMBER_FINAL:
                return None
            return self._after_value()._step(ch)
        if mode == "literal":
            if ch != aux[0]:
                return None
            return replace(self, aux=aux[1:]) if len(aux) > 1 else self._after_value()
        if ch in _WS:
            return self if mode != "done" else None
        if mode == "start":
            return self._open(ch) if ch == "{" else None
        if mode == "obj_first":
            if ch == "}":
                return self._close(ch)
            return replace(self, mode="string", aux="k") if ch == '"' else None
        if mode == "obj_key":
            return replace(self, mode="string", aux="k") if ch == '"' else None
        if mode == "colon":
            return replace(self, mode="value") if ch == ":" else None
        if mode == "value":
            return self._start_value(ch)
        if mode == "arr_first":
            return self._close(ch) if ch == "]" else self._start_value(ch)
        if mode == "after":
            if ch == ",":
                return replace(self, mode="obj_key" if self.stack[-1] == "o" else "value")
            return self._close(ch)
        return None  # done: nothing may follow

    def _string_step(self, ch: str) -> JsonState | None:
        kind, esc = self.aux[0], self.aux[1:]
        if esc == "\\":
            if ch == "u":
                return replace(self, aux=kind + "u")
            return replace(self, aux=kind) if ch in _ESCAPES else None
        if esc.startswith("u"):
            if ch not in _HEX:
                return None
            return replace(self, aux=kind + esc + "x") if len(esc) < 4 else replace(self, aux=kind)
        if ch == '"':
            return replace(self, mode="colon", aux="") if kind == "k" else self._after_value()
        if ch == "\\":
            return replace(self, aux=kind + "\\")
        return None if ord(ch) < 0x20 else self

    def completion(self) -> str:
        closers = "".join("}" if c == "o" else "]" for c in reversed(self.stack))
        mode, aux = self.mode, self.aux
        if mode == "start":
            return "{}"
        if mode == "done":
            return ""
        if mode == "obj_first":
            return closers
        if mode == "arr_first":
            return closers
        if mode == "obj_key":
            return '"":0' + closers
        if mode == "colon":
            return ":0" + closers
        if mode == "value":
            return "0" + closers
        if mode == "after":
            return closers
        if mode == "literal":
            return aux + closers
        if mode == "number":
            return ("" if aux in _NUMBER_FINAL else "0") + closers
        # string
        kind, esc = aux[0], aux[1:]
        tail = '":0' if kind == "k" else '"'
        if esc == "\\":
            tail = "n" + tail
        elif esc.startswith("u"):
            tail = "0" * (5 - len(esc)) + tail
        return tail + closers


def _char_class(ch: str) -> str:
    if ch == "0":
        return "0"
    if ch in _DIGITS:
        return "d"
    if ch in "eE":
        return "e"
    return ch if ch in "-+." else "?"


# Number sub-states: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
_NUMBER = {
    "sign": {"0": "zero", "d": "int"},
    "zero": {".": "frac0", "e": "exp0"},
    "int": {"0": "int", "d": "int", ".": "frac0", "e": "exp0"},
    "frac0": {"0": "frac", "d": "frac"},
    "frac": {"0": "frac", "d": "frac", "e": "exp0"},
    "exp0": {"0": "exp", "d": "exp", "+": "expsign", "-": "expsign"},
    "expsign": {"0": "exp", "d": "exp"},
    "exp": {"0": "exp", "d": "exp"},
}
_NUMBER_FINAL = {"zero", "int", "frac", "exp"}


class TokenTable:
    """The text each token id appends to an output; None for special and partial-UTF-8 tokens."""

    def __init__(self, tokenizer) -> None:
        anchor = tokenizer.encode("a", add_special_tokens=False)[-1]
        base = tokenizer.decode([anchor])
        special = set(tokenizer.all_special_ids)
        n = len(tokenizer)
        decoded = tokenizer.batch_decode([[anchor, i] for i in range(n)], skip_special_tokens=False)
        self.texts: list[str | None] = []
        for i, text in enumerate(decoded):
            piece = text[len(base):] if text.startswith(base) else None
            if i in special or not piece or "\ufffd" in piece:
                piece = None
            self.texts.append(piece)
        # First character -> candidate ids, for the slow path when no top-k token fits.
        by_first: dict[str, list[int]] = {}
        for i, piece in enumerate(self.texts):
            if piece:
                by_first.setdefault(piece[0], []).append(i)
        self.by_first = {ch: torch.tensor(ids) for ch, ids in by_first.items()}
        single = {piece for piece in self.texts if piece is not None and len(piece) == 1}
        self.missing = sorted(set(_NEEDED) - single)


class JsonConstraint:
    """Per-row constraint state; `choose` returns the next token id or None when the row is done."""

    TOP_K = 64

    def __init__(self, table: TokenTable, max_new_tokens: int) -> None:
        if table.missing:
            raise ValueError(f"JSON mode needs single-character tokens for {table.missing!r}; "
                             "this tokenizer has none")
        if max_new_tokens < 2:
            raise ValueError(f"JSON mode needs max_tokens >= 2 (the shortest object is '{{}}'), "
                             f"got {max_new_tokens}")
        self.table = table
        self.state = JsonState()
        self.left = max_new_tokens
        self.text = ""

    @property
    def done(self) -> bool:
        return self.state.done

    def _allowed(self, token: int) -> JsonState | None:
        piece = self.table.texts[token]
        if piece is None:
            return None
        after = self.state.feed(piece)
        if after is None or len(after.completion()) > self.left - 1:
            return None
        return after

    def choose(self, logits: torch.Tensor, temperature: float, top_p: float,
               generator: torch.Generator | None) -> int:
        """Pick among the allowed tokens: greedy when temperature is 0, else top-p sampling."""
        k = min(self.TOP_K, logits.numel())
        values, ids = torch.topk(logits, k)
        found = [(v, i) for v, i in zip(values.tolist(), ids.tolist()) if self._allowed(i) is not None]
        if not found:
            found = self._slow_candidates(logits)
        if temperature <= 0 or len(found) == 1:
            token = found[0][1]
        else:
            scores = torch.tensor([v for v, _ in found]) / temperature
            probs = torch.softmax(scores, dim=-1)
            keep = (torch.cumsum(probs, 0) - probs) < top_p
            probs = probs * keep
            pick = int(torch.multinomial(probs / probs.sum(), 1, generator=generator))
            token = found[pick][1]
        self.state = self._allowed(token)  # type: ignore[assignment]
        self.text += self.table.texts[token]  # type: ignore[operator]
        self.left -= 1
        return token

    def _slow_candidates(self, logits: torch.Tensor) -> list[tuple[float, int]]:
        """Best allowed tokens among those whose first character the automaton accepts now."""
        firsts = [ch for ch in self.table.by_first if self.state.feed(ch) is not None]
        ids = torch.cat([self.table.by_first[ch] for ch in firsts])
        scores = logits.float().cpu()[ids]
        order = torch.argsort(scores, descending=True)
        found = []
        for j in order.tolist():
            token = int(ids[j])
            if self._allowed(token) is not None:
                found.append((float(scores[j]), token))
                if len(found) >= self.TOP_K:
                    break
        if not found:  # unreachable while the budget invariant holds; kept as a loud guard
            raise RuntimeError(f"JSON constraint found no allowed token in state {self.state}")
        return found
