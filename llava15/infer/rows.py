"""One row of an engine batch while it decodes: its settings, text stream, JSON constraint and events.

Contract: `RowState(index, params, prompt_tokens, stream, constraint, generator, stop_ids)`;
`row.advance(chosen, logits) -> Event` applies the batch's token for this row (`chosen[index]`; a JSON
row's constraint picks its own token from `logits[index]` and writes it back into `chosen`) and ends
the row on a stop id (unless `ignore_eos`), a stop string, a finished JSON object or the length limit.
The finished event carries the whole reply (`text`) and the generated ids (stop id included).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from llava15.infer.decoding import DecodingParams, TextStream
from llava15.infer.json_constraint import JsonConstraint


@dataclass
class Event:
    row: int
    delta: str = ""
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" once finished
    completion_tokens: int = 0
    prompt_tokens: int = 0
    text: str | None = None  # the whole reply, on the finished event
    token_ids: list[int] | None = None  # the generated ids (stop id included), on the finished event


@dataclass
class RowState:
    index: int
    params: DecodingParams
    prompt_tokens: int
    stream: TextStream
    constraint: JsonConstraint | None
    generator: torch.Generator | None
    stop_ids: set[int] | frozenset[int]
    generated: list[int] = field(default_factory=list)
    done: bool = False

    def advance(self, chosen: list[int], logits: torch.Tensor) -> Event:
        ev = self._apply(chosen, logits)
        self.generated.append(chosen[self.index])
        ev.prompt_tokens = self.prompt_tokens
        if ev.finished:
            ev.token_ids = self.generated
        self.done = ev.finished
        return ev

    def _apply(self, chosen: list[int], logits: torch.Tensor) -> Event:
        i, p, stream, n = self.index, self.params, self.stream, len(self.generated) + 1
        if self.constraint is not None:
            c = self.constraint
            chosen[i] = c.choose(logits[i], p.temperature, p.top_p, self.generator)
            # The constraint's own text is what was validated, so it is the reply (not a re-decode).
            stream.set_text(c.text.lstrip())
            if c.done:
                return Event(i, stream.finish(c.text.strip()), True, "stop", n, text=stream.final_text)
            return Event(i, stream.release(final=False), completion_tokens=n)
        token = chosen[i]
        if token in self.stop_ids and not p.ignore_eos:
            return Event(i, stream.finish(), True, "stop", n, text=stream.final_text)
        delta, stopped = stream.push(token)
        if stopped:
            return Event(i, delta, True, "stop", n, text=stream.final_text)
        if n >= p.max_new_tokens:
            return Event(i, delta + stream.finish(), True, "length", n, text=stream.final_text)
        return Event(i, delta, completion_tokens=n)
