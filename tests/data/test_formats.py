"""Readers and record validation: errors name file, record and field; `import llava15.data` stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llava15.data.conversation import Conversation, DataError, Message, move_images_to_front
from llava15.data.formats import modality_length, read_records, record_to_conversation, word_count


def test_import_is_light():
    code = ("import sys, llava15.data as d; d.get_template; d.record_to_conversation; "
            "assert 'transformers' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
    import llava15.data as data

    assert all(getattr(data, name) is not None for name in data.__all__)


def test_error_names_file_record_and_field():
    rec = {"id": "r7", "conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "x"}]}
    with pytest.raises(DataError) as err:
        record_to_conversation(rec, 7, "train.json")
    msg = str(err.value)
    assert "train.json" in msg and "'r7'" in msg and "conversations[1].from" in msg and "'bot'" in msg
    assert err.value.reason == "unknown_role" and err.value.field == "conversations[1].from"
    import pickle

    again = pickle.loads(pickle.dumps(err.value))  # as raised in a DataLoader worker
    assert (str(again), again.reason, again.record_id) == (msg, "unknown_role", "r7")


def test_record_forms():
    rec = {"id": 3, "image": ["a.jpg", "b.jpg"], "conversations": [
        {"from": "system", "value": "S"}, {"from": "human", "value": "<image><image> Q"},
        {"from": "gpt", "value": "A"}]}
    conv = record_to_conversation(rec, 0)
    assert conv.id == "3" and conv.images == ["a.jpg", "b.jpg"] and [m.role for m in conv.messages] == [
        "system", "user", "assistant"]
    assert modality_length(rec) == 4  # "<image><image>" is one whitespace word, as in the original
    with pytest.raises(DataError, match="2 <image> marker"):
        record_to_conversation({**rec, "image": "a.jpg"}, 0)


def test_move_images_to_front_like_preprocess_multimodal():
    conv = Conversation("x", [Message("user", "Describe.\n<image>"), Message("assistant", "ok")], ["a"])
    assert move_images_to_front(conv).messages[0].content == "<image>\nDescribe."
    two = Conversation("y", [Message("user", "<image> left, <image> right")], ["a", "b"])
    assert move_images_to_front(two).messages[0].content == "<image> left, <image> right"


def test_read_records_json_and_jsonl(tmp_path):
    recs = [{"id": i, "conversations": []} for i in range(3)]
    (tmp_path / "a.json").write_text("\ufeff" + json.dumps(recs), encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
    for name in ("a.json", "b.jsonl"):
        assert [r for _, r in read_records(tmp_path / name)] == recs
    (tmp_path / "bad.json").write_text('[{"id": 1}, {"id": ')
    with pytest.raises(DataError, match="record 1 is not valid JSON"):
        list(read_records(tmp_path / "bad.json"))


@pytest.mark.parametrize("text", ["a  b\n\nc\t", " x", "", "\x1c a\x1fb", "日本 語", "a\u00a0b", "one"])
def test_word_count_equals_split(text):
    assert word_count([text, text]) == 2 * len(text.split())
