"""`data check` as a report: every unreadable line counted with its line number, never a stop."""

from __future__ import annotations

import json
from argparse import Namespace

import pytest

from llava15.data import tolerant_reader
from llava15.data.check import run_check
from llava15.data.tolerant_reader import read_items

GOOD = {"conversations": [{"from": "human", "value": "Hi, café?"}, {"from": "gpt", "value": "Hello"}]}
BAD_ORDER = {"id": "order", "conversations": [{"from": "human", "value": "Hi"}, {"from": "human", "value": "Again"},
                                               {"from": "gpt", "value": "Yo"}]}


def _rec(i: int) -> bytes:
    return json.dumps({"id": f"r{i}", **GOOD}, ensure_ascii=False).encode()


def _check(path, capsys, **kw) -> tuple[int, dict]:
    args = Namespace(file=str(path), images=None, tokenizer=None, template="vicuna_v1", json=True,
                     max_problem_fraction=kw.pop("max_problem_fraction", 0.0), histogram=None, **kw)
    status = run_check(args)
    return status, json.loads(capsys.readouterr().out)


def test_jsonl_bad_lines_are_counted_and_reading_goes_on(tmp_path, capsys):
    lines = [b"\xef\xbb\xbf" + _rec(0), b'{"id": "latin1", "x": "caf\xe9"}', b"", _rec(2), b'{"id": "cut", "conv',
             json.dumps(BAD_ORDER).encode(), b"[1, 2", _rec(6)]
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    status, report = _check(path, capsys)
    assert status == 1 and report["records"] == 7 and report["good"] == 3 and report["complete"]
    problems = report["problems"]
    assert problems["not_utf8"]["examples"] == ["#1 (line 2)"] and "byte 0xe9" in problems["not_utf8"]["message"]
    assert problems["bad_json"]["count"] == 2 and problems["bad_json"]["examples"] == ["#3 (line 5)", "#5 (line 7)"]
    assert problems["roles"]["examples"] == ["order (line 6)"]
    assert report["checks"] == ["JSON/UTF-8 of every line", "record structure", "role order"]
    assert set(report["not_checked"]) == {"image files", "token lengths and special tokens"}
    assert _check(path, capsys, max_problem_fraction=0.6)[0] == 0  # 4 of 7 bad: under the threshold


@pytest.mark.parametrize("chunk", [8 << 20, 37])  # 37 bytes: every record crosses a read boundary
def test_json_list_streams_and_a_truncated_file_fails(tmp_path, capsys, monkeypatch, chunk):
    monkeypatch.setattr(tolerant_reader, "_CHUNK", chunk)
    body = [_rec(0), b'{"id": "latin1", "conversations": "caf\xe9"}', json.dumps(BAD_ORDER).encode(), _rec(3)]
    whole = tmp_path / "d.json"
    whole.write_bytes(b"[\n" + b",\n".join(body) + b"\n]\n")
    items = list(read_items(whole))
    assert [(i.index, i.line) for i in items] == [(0, 2), (1, 3), (2, 4), (3, 5)]
    assert items[1].error.reason == "not_utf8" and "line 3" in str(items[1].error)
    assert items[3].record["id"] == "r3" and items[3].record["conversations"][0]["value"] == "Hi, café?"
    status, report = _check(whole, capsys, max_problem_fraction=0.5)
    assert status == 0 and report["good"] == 2 and report["complete"]

    cut = tmp_path / "cut.json"
    cut.write_bytes(whole.read_bytes()[:-30])
    status, report = _check(cut, capsys, max_problem_fraction=1.0)
    assert status == 1 and not report["complete"], "a truncated file always fails"
    assert "truncated" in report["problems"]["bad_json"]["message"]
    assert "record 3, which starts on line 5" in report["problems"]["bad_json"]["message"]
