"""The JSON automaton: accepts exactly the prefixes of JSON objects, and always knows how to close them."""

from __future__ import annotations

import json
import random

import pytest

from llava15.infer.json_constraint import JsonState

DOCS = [
    '{}',
    '{"a": 1, "b": [true, false, null], "c": {"d": -0.5e+3, "e": "x\\"y\\\\z\\u00e9"}}',
    '{ "list" : [ [], [1, 2.0, 3e4], {"k": "v"} ] , "n": 0 }',
    '{"unicode": "héllo wörld ✓", "neg": -12, "exp": 1E-2}',
]


@pytest.mark.parametrize("doc", DOCS)
def test_every_prefix_is_accepted_and_its_completion_parses(doc):
    for cut in range(len(doc) + 1):
        state = JsonState().feed(doc[:cut])
        assert state is not None, f"prefix {doc[:cut]!r} rejected"
        completion = state.completion()
        assert isinstance(json.loads(doc[:cut] + completion), dict), (doc[:cut], completion)
        # feeding the completion one character at a time shortens it by exactly one each time
        for k, ch in enumerate(completion):
            state = state.feed(ch)
            assert state is not None and len(state.completion()) == len(completion) - k - 1
        assert state.done
    assert JsonState().feed(doc).done


@pytest.mark.parametrize("bad", ['[1]', '"x"', '{"a" 1}', '{"a": 01}', '{"a": tru e}', '{,}', '{"a": 1,}',
                                 '{"a": [1,]}', '{"a": "\n"}', '{"a": "\\x"}', '{"a": 1} x', '{"a": -}',
                                 '{"a": 1.}', "{'a': 1}", '{"a": 1]'])
def test_invalid_text_is_rejected(bad):
    state = JsonState().feed(bad)
    assert state is None or not state.done


def test_random_walks_through_the_automaton_always_close_to_valid_json():
    rng = random.Random(0)
    alphabet = list('{}[]":,0123456789-+.eEtrufalsn \\abc')
    for _ in range(300):
        state, text = JsonState(), ""
        for _ in range(rng.randint(1, 40)):
            options = [c for c in alphabet if state.feed(c) is not None]
            if not options:
                break
            ch = rng.choice(options)
            state, text = state.feed(ch), text + ch
            if state.done:
                break
        assert isinstance(json.loads(text + state.completion()), dict), text
