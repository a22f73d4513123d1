"""`llava15 serve` as a real process, driven with the official `openai` client and raw HTTP."""

from __future__ import annotations

import base64
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import psutil
import pytest
from PIL import Image


def _data_url(img: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


RED = _data_url(Image.new("RGB", (40, 30), (220, 20, 20)))


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key, max_retries=0, timeout=60)


def _image_msg(text: str, url: str = RED) -> dict:
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                        {"type": "text", "text": text}]}


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [server.model]
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_plain_and_streamed_replies_agree(server, client):
    kw = {"model": server.model, "messages": [{"role": "user", "content": "Hello, who are you?"}],
          "max_tokens": 6, "temperature": 0}
    plain = client.chat.completions.create(**kw)
    choice = plain.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert 1 <= plain.usage.completion_tokens <= 6 and plain.usage.prompt_tokens > 10
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_image_data_url_and_multi_turn(server, client):
    first = client.chat.completions.create(model=server.model, messages=[_image_msg("What is this?")],
                                           max_tokens=5, temperature=0)
    history = [_image_msg("What is this?"), {"role": "assistant", "content": first.choices[0].message.content},
               {"role": "user", "content": "What colour is it?"}]
    second = client.chat.completions.create(model=server.model, messages=history, max_tokens=5, temperature=0)
    assert second.usage.prompt_tokens > first.usage.prompt_tokens
    assert isinstance(second.choices[0].message.content, str)


def test_json_mode_output_parses(server, client):
    for max_tokens in (3, 24):
        out = client.chat.completions.create(model=server.model, messages=[_image_msg("Describe as JSON.")],
                                             max_tokens=max_tokens, temperature=0.8, seed=1,
                                             response_format={"type": "json_object"})
        assert isinstance(json.loads(out.choices[0].message.content), dict)


def test_file_url_only_under_the_allowed_folder(server, client):
    ok = client.chat.completions.create(
        model=server.model, max_tokens=3,
        messages=[_image_msg("What?", "file://" + str(server.image_dir / "green.png"))])
    assert ok.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model=server.model, max_tokens=3,
                                       messages=[_image_msg("What?", "file:///etc/hostname")])


# ---------------------------------------------------------------------------------- bounded load test

def _huge_png() -> str:
    return _data_url(Image.new("L", (4200, 4100), 0))


def _malformed(server, kind: str, huge: str) -> tuple[dict, dict, int]:
    """(headers, body, expected status) of one malformed request of the given kind."""
    headers = {"Authorization": f"Bearer {server.api_key}"}
    body = {"model": server.model, "max_tokens": 3, "messages": [_image_msg("x")]}
    if kind == "bad_base64":
        body["messages"] = [_image_msg("x", "data:image/png;base64,@@not*base64@@")]
    elif kind == "not_an_image":
        body["messages"] = [_image_msg("x", "data:image/png;base64," + base64.b64encode(b"hello" * 50).decode())]
    elif kind == "huge_image":
        body["messages"] = [_image_msg("x", huge)]
    elif kind == "wrong_schema":
        body["messages"] = [{"role": "user", "content": 42}]
    elif kind == "too_many_tokens":
        body["max_tokens"] = server.max_tokens_limit * 1000
    elif kind == "wrong_key":
        headers = {"Authorization": "Bearer nope"}
    elif kind == "forbidden_path":
        body["messages"] = [_image_msg("x", "file:///etc/passwd")]
    expected = {"wrong_key": 401, "forbidden_path": 403}.get(kind, 400)
    return headers, body, expected


KINDS = ["bad_base64", "not_an_image", "huge_image", "wrong_schema", "too_many_tokens", "wrong_key",
         "forbidden_path"]


def test_bounded_load_with_malformed_requests(server):
    huge = _huge_png()
    proc = psutil.Process(server.proc.pid)
    jobs = []
    for i in range(300):
        if i % 5 == 4:
            jobs.append(("bad",) + _malformed(server, KINDS[(i // 5) % len(KINDS)], huge))
        else:
            msg = _image_msg(f"Question {i}?") if i % 2 else {"role": "user", "content": f"Question {i}?"}
            body = {"model": server.model, "max_tokens": 1 + i % 3, "messages": [msg], "stream": i % 3 == 0}
            jobs.append(("ok", {"Authorization": f"Bearer {server.api_key}"}, body, 200))

    with httpx.Client(base_url=server.url, timeout=120) as http:
        def send(job):
            _, headers, body, expected = job
            r = http.post("/v1/chat/completions", headers=headers, json=body)
            return job, r.status_code, r.text

        with ThreadPoolExecutor(16) as pool:  # warm-up: allocator and batch shapes reach steady state
            list(pool.map(send, [j for j in jobs if j[0] == "ok"][:48]))
        rss_warm = proc.memory_info().rss
        start = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(send, jobs))
        elapsed = time.monotonic() - start
        rss_after = proc.memory_info().rss
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(send, [j for j in jobs if j[0] == "ok"][:48]))
        rss_settled = proc.memory_info().rss

    problems = []
    for (kind, _, body, expected), status, text in results:
        if status != expected:
            problems.append(f"{kind} expected {expected} got {status}: {text[:200]}")
        elif kind == "bad":
            err = json.loads(text)["error"]
            assert set(err) >= {"message", "type", "code"} and err["message"]
        elif body["stream"]:
            assert text.rstrip().endswith("data: [DONE]"), text[-200:]
        else:
            assert json.loads(text)["choices"][0]["message"]["role"] == "assistant"
    assert not problems, "\n".join(problems[:10])
    health = httpx.get(server.url + "/health")
    assert server.proc.poll() is None and health.status_code == 200
    assert health.json()["largest_batch"] > 1, "concurrent requests were never batched together"
    mib = 1024 * 1024
    print(f"300 requests in {elapsed:.1f} s; RSS warm {rss_warm / mib:.0f} MiB, after {rss_after / mib:.0f} MiB, "
          f"settled {rss_settled / mib:.0f} MiB")
    assert rss_after - rss_warm < 300 * mib, "server memory grew by more than 300 MiB under load"
    assert rss_settled - rss_after < 64 * mib, "server memory keeps growing after the load"


def test_error_shapes_for_other_bad_requests(server):
    h = {"Authorization": f"Bearer {server.api_key}"}
    cases = [
        (b"{not json", 400), (b"[]", 400),
        (json.dumps({"model": "other", "messages": [{"role": "user", "content": "x"}]}).encode(), 404),
        (json.dumps({"model": server.model, "messages": []}).encode(), 400),
        (json.dumps({"model": server.model, "n": 2, "messages": [{"role": "user", "content": "x"}]}).encode(), 400),
        (json.dumps({"model": server.model, "messages": [{"role": "user", "content": "<image>\nx"}]}).encode(), 400),
        (json.dumps({"model": server.model, "messages": [{"role": "assistant", "content": "x"}]}).encode(), 400),
        (json.dumps({"model": server.model, "messages": [_image_msg("x", "https://example.com/a.png")]}).encode(),
         400),
    ]
    for raw, status in cases:
        r = httpx.post(server.url + "/v1/chat/completions", headers={**h, "Content-Type": "application/json"},
                       content=raw)
        assert r.status_code == status, (raw[:80], r.text)
        assert r.json()["error"]["message"]
    assert httpx.get(server.url + "/v1/models").status_code == 401
    assert httpx.get(server.url + "/nope").json()["error"]["code"] == "not_found"
