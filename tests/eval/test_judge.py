"""The GPT judge over a real OpenAI-compatible HTTP endpoint (a tiny fake judge server on 127.0.0.1
returning canned replies): official prompts, parsing, retries, on-disk cache, judge recorded."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llava15.cli import main
from llava15.eval.benchmarks import get_benchmark
from llava15.eval.judge import MMVET_PROMPT, Judge, JudgeError


class FakeJudge:
    """Records every request; `reply(body)` decides the canned answer."""

    def __init__(self, reply):
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, **body})
                data = json.dumps({"model": body["model"],
                                   "choices": [{"message": {"role": "assistant", "content": reply(body)}}]})  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    servers = []

    def start(reply):
        servers.append(FakeJudge(reply))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _llava_bench(tmp_path: Path) -> list[dict]:
    d = tmp_path / "data" / "llava-bench-in-the-wild"
    qs = [{"question_id": i, "image": f"{i // 2:03d}.jpg", "text": f"Question {i}?", "category": c}
          for i, c in enumerate(["conv", "detail", "complex"])]  # fmt: skip
    _jsonl(d / "questions.jsonl", qs)
    _jsonl(d / "context.jsonl", [{"image": "000.jpg", "caption": ["A dog.", "On grass."]},
                                 {"image": "001.jpg", "caption": "A cat."}])  # fmt: skip
    _jsonl(
        d / "answers_gpt4.jsonl",
        [{"question_id": i, "text": f"Reference {i}.", "answer_id": f"r{i}"} for i in range(3)],
    )
    return [
        {"question_id": i, "text": f"Model answer {i}.", "answer_id": f"a{i}", "model_id": "tiny"}
        for i in range(3)
    ]


def test_llava_bench_review_prompt_scores_cache_and_judge_record(tmp_path, fake):
    server = fake(lambda body: "8 6\nAssistant 1 was better.")
    answers = _llava_bench(tmp_path)
    judge = Judge(server.url, "local-judge", tmp_path / "cache")
    res = get_benchmark("llava_bench").score(answers, tmp_path / "data", tmp_path / "out", judge)
    assert res["status"] == "scored" and res["value"] == 75.0
    assert res["judge"]["model"] == "local-judge" and res["judge"]["paper_judge"] == "gpt-4-0314"
    assert res["judge"]["paper_comparable"] is False
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["temperature"] == 0.2 and req["max_tokens"] == 1024
    assert req["messages"][0] == {"role": "system", "content": "You are a helpful and precise assistant for "
                                  "checking the quality of the answer."}  # fmt: skip
    content = req["messages"][1]["content"]
    assert content.startswith("[Context]\nA dog.\nOn grass.\n\n[Question]\nQuestion 0?\n\n[Assistant 1]\nReference 0."
                              "\n\n[End of Assistant 1]\n\n[Assistant 2]\nModel answer 0.\n\n[End of Assistant 2]\n\n"
                              "[System]\nWe would like to request your feedback")  # fmt: skip
    assert content.endswith("does not affect your judgment.\n\n")
    reviews = [json.loads(x) for x in Path(res["files"]["reviews_run1"]).read_text().splitlines()]
    assert reviews[1] == {"id": 2, "question_id": 1, "answer1_id": "r1", "answer2_id": "a1",
                          "category": "llava_bench_detail", "content": "8 6\nAssistant 1 was better.", "tuple": [8.0, 6.0]}  # fmt: skip
    # a rerun is served from the cache: no new HTTP call, same score
    again = get_benchmark("llava_bench").score(
        answers, tmp_path / "data", None, Judge(server.url, "local-judge", tmp_path / "cache")
    )
    assert len(server.requests) == 3 and again["value"] == 75.0 and again["judge"]["cache_hits"] == 3


def test_mmvet_grading_retries_and_cli(tmp_path, fake):
    def reply(body):
        content = body["messages"][0]["content"]
        if "| sample two |" in content:
            return "0.4" if content.endswith("(digit): ") and body["temperature"] == 0.5 else "bad"
        if "| hopeless |" in content:
            return "n/a"
        return "0.7 because"

    server = fake(reply)
    d = tmp_path / "root" / "mm-vet"
    gt = {"v1_0": {"question": "q0", "answer": "a<AND>b", "capability": ["rec"]},
          "v1_1": {"question": "q1", "answer": "sample two", "capability": ["rec", "ocr"]},
          "v1_2": {"question": "q2", "answer": "hopeless", "capability": ["math"]}}  # fmt: skip
    d.mkdir(parents=True)
    (d / "mm-vet.json").write_text(json.dumps(gt))
    answers = _jsonl(tmp_path / "answers.jsonl", [{"question_id": i, "text": f"pred {i}"} for i in range(3)])
    out = tmp_path / "out"
    assert main(["eval", "score", "--benchmark", "mmvet", "--answers", str(answers), "--data-root",
                 str(tmp_path / "root"), "--out", str(out), "--judge-url", server.url, "--judge-model", "j", "--judge-runs", "1"]) == 0  # fmt: skip
    res = json.loads((out / "mmvet_scores.json").read_text())
    assert res["value"] == pytest.approx(round(100 * (0.7 + 0.4 + 0.0) / 3, 1))
    assert res["metrics"]["capabilities"] == {"math": 0.0, "ocr": 40.0, "rec": 55.0}
    assert res["judge"]["model"] == "j"
    first = server.requests[0]
    assert first["max_tokens"] == 3 and first["temperature"] == 0.0
    assert first["messages"][0]["content"] == MMVET_PROMPT + "\nq0 | a <AND> b | pred 0 | "
    hopeless = [r for r in server.requests if "| hopeless |" in r["messages"][0]["content"]]
    assert [r["temperature"] for r in hopeless] == [0.0, 0.0, 0.5, 1.0, 1.5]  # then 0.0 without reading more
    grades = json.loads((out / "mmvet_grade-1runs.json").read_text())
    assert grades["v1_1"] == {"model": ["j"], "content": ["0.4"], "score": [0.4]}


def test_unreachable_judge_raises_a_named_error(tmp_path):
    judge = Judge("http://127.0.0.1:9/v1", "m", tmp_path, retries=1)
    with pytest.raises(JudgeError, match="127.0.0.1:9"):
        judge.chat([{"role": "user", "content": "x"}], 0.0, 3)


def test_several_judge_runs_are_separate_calls_and_averaged(tmp_path, fake):
    replies = iter(["8 6\n", "8 6\n", "8 6\n", "10 10\n", "10 10\n", "10 10\n"])
    server = fake(lambda body: next(replies))
    answers = _llava_bench(tmp_path)
    judge = Judge(server.url, "local-judge", tmp_path / "cache", runs=2)
    res = get_benchmark("llava_bench").score(answers, tmp_path / "data", tmp_path / "out", judge)
    assert len(server.requests) == 6 and res["value"] == pytest.approx((75.0 + 100.0) / 2)
    assert res["judge"]["runs"] == 2 and {"reviews_run1", "reviews_run2"} <= set(res["files"])
