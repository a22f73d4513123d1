"""GPT judge for LLaVA-Bench (in-the-Wild) and MM-Vet over any OpenAI-compatible endpoint.

``Judge(url, model, cache_dir)`` posts ``/chat/completions`` with plain ``urllib`` and caches every reply
on disk under a key of (model, messages, temperature, max_tokens, run), so reruns cost nothing and
give the same score. The prompts and parsing rules are the official ones (eval.md §3.11-3.12):

* LLaVA-Bench (``eval_gpt_review_bench.py``): system message + ``[Context]…[System]`` content with the
  ``rule.json`` prompt, temperature 0.2, 1024 tokens; first line parsed by
  :func:`~llava15.eval.metrics.llava_bench_parse_score`.
* MM-Vet (``mm-vet_evaluator.py``): few-shot prompt + ``question | answer | prediction | ``, 3 tokens,
  temperature 0; an unparseable or out-of-range reply is retried with ``Predict the correctness of the
  answer (digit): `` appended and temperature raised by 0.5 each time, 0.0 after 5 tries.

The paper's judges were ``gpt-4-0314`` (LLaVA-Bench) and ``gpt-4-0613`` (MM-Vet); ``info()`` records
which judge was used and whether it is the paper's, so a score is never mistaken for a comparable one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from llava15.eval.metrics import llava_bench_parse_score

LLAVA_BENCH_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
LLAVA_BENCH_RULE = (
    "We would like to request your feedback on the performance of two AI assistants in response to the "
    "user question displayed above. The user asks the question on observing an image. For your reference, "
    "the visual content in the image is represented with a few sentences describing the image. \n"
    "Please rate the helpfulness, relevance, accuracy, level of details of their responses. Each assistant "
    "receives an overall score on a scale of 1 to 10, where a higher score indicates better overall "
    "performance.\nPlease first output a single line containing only two values indicating the scores for "
    "Assistant 1 and 2, respectively. The two scores are separated by a space.\nIn the subsequent line, "
    "please provide a comprehensive explanation of your evaluation, avoiding any potential bias and "
    "ensuring that the order in which the responses were presented does not affect your judgment."
)
MMVET_PROMPT = """Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. <AND> in the ground truth means it is totally right only when all elements in the ground truth are present in the prediction, and <OR> means it is totally right when any one element in the ground truth is present in the prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right). Just complete the last space of the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme talks about Iceland and Greenland. It's pointing out that despite their names, Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme is using humor to point out the misleading nature of Iceland's and Greenland's names. Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow. The text 'This is why I have trust issues' is a playful way to suggest that these contradictions can lead to distrust or confusion. The humor in this meme is derived from the unexpected contrast between the names of the countries and their actual physical characteristics. | 1.0
"""  # noqa: E501
MMVET_RETRY = "\nPredict the correctness of the answer (digit): "
PAPER_JUDGES = {"llava_bench": "gpt-4-0314", "mmvet": "gpt-4-0613"}


class JudgeError(RuntimeError):
    """The judge endpoint failed after retries."""


class Judge:
    """An OpenAI-compatible chat endpoint with an on-disk cache of every call."""

    def __init__(self, url: str, model: str, cache_dir: str | Path, api_key: str | None = None,
                 timeout: float = 120.0, retries: int = 3, runs: int = 1) -> None:  # fmt: skip
        url = url.rstrip("/")
        self.endpoint = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model = model
        self.cache_dir = Path(cache_dir)
        self.api_key = api_key or os.environ.get("LLAVA15_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.retries = retries
        self.runs = runs
        """Independent judge runs per answer (the released LLaVA-Bench numbers average 3)."""
        self.calls = 0
        self.cache_hits = 0

    def info(self, benchmark: str) -> dict[str, Any]:
        paper = PAPER_JUDGES.get(benchmark)
        return {"url": self.endpoint, "model": self.model, "runs": self.runs, "paper_judge": paper,
                "paper_comparable": self.model == paper, "calls": self.calls, "cache_hits": self.cache_hits,
                "cache_dir": str(self.cache_dir)}  # fmt: skip

    def chat(self, messages: list[dict[str, str]], temperature: float, max_tokens: int, run: int = 0) -> str:
        """The reply text; ``run`` separates independent judge runs of the same prompt in the cache."""
        key_src = json.dumps([self.model, messages, temperature, max_tokens, run], ensure_ascii=False)
        key = hashlib.sha256(key_src.encode()).hexdigest()
        path = self.cache_dir / key[:2] / f"{key}.json"
        if path.exists():
            self.cache_hits += 1
            return json.loads(path.read_text(encoding="utf-8"))["reply"]
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        reply = self._post(body)
        self.calls += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"request": body, "reply": reply}, ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)  # atomic: a killed run never leaves a half-written cache entry
        return reply

    def _post(self, body: dict[str, Any]) -> str:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode()
        last: Exception | None = None
        for attempt in range(self.retries):
            req = urllib.request.Request(self.endpoint, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    payload = json.loads(resp.read().decode())
                return payload["choices"][0]["message"]["content"] or ""
            except (urllib.error.URLError, TimeoutError, KeyError, IndexError, json.JSONDecodeError) as e:
                last = e
                if attempt + 1 < self.retries:
                    time.sleep(min(2**attempt, 10))
        raise JudgeError(f"judge {self.endpoint} (model {self.model}) failed {self.retries} times: {last}")


def llava_bench_content(caption: str | list[str], question: str, reference: str, answer: str) -> str:
    """The official review content (role ``Assistant``; Assistant 1 = GPT-4 reference)."""
    cap = "\n".join(caption) if isinstance(caption, list) else caption
    return (
        f"[Context]\n{cap}\n\n[Question]\n{question}\n\n"
        f"[Assistant 1]\n{reference}\n\n[End of Assistant 1]\n\n"
        f"[Assistant 2]\n{answer}\n\n[End of Assistant 2]\n\n"
        f"[System]\n{LLAVA_BENCH_RULE}\n\n"
    )


def llava_bench_review(judge: Judge, content: str, run: int = 0) -> tuple[str, list[float]]:
    messages = [{"role": "system", "content": LLAVA_BENCH_SYSTEM}, {"role": "user", "content": content}]
    review = judge.chat(messages, temperature=0.2, max_tokens=1024, run=run)
    return review, llava_bench_parse_score(review)


def _mmvet_parse(reply: str) -> float | None:
    try:
        score = float(reply.split(" ")[0].strip())
    except ValueError:
        return None
    # written as the evaluator's rejection test (so a 'nan' reply is accepted, as there)
    return None if score > 1.0 or score < 0.0 else score


def mmvet_grade(judge: Judge, question: str, answer: str, prediction: str, run: int = 0) -> tuple[float, str]:
    """One MM-Vet grade: ``(score in [0, 1], judge reply)``."""
    gt = answer.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    base = MMVET_PROMPT + "\n" + " | ".join([question, gt, prediction, ""])
    temperature = 0.0
    reply = judge.chat([{"role": "user", "content": base}], temperature, 3, run)
    score = _mmvet_parse(reply)
    tries = 1
    while score is None:
        if tries >= 5:  # the evaluator's 5th retry reply is never read: it gives 0.0
            return 0.0, reply
        reply = judge.chat([{"role": "user", "content": base + MMVET_RETRY}], temperature, 3, run)
        tries += 1
        temperature += 0.5
        score = _mmvet_parse(reply)
    return score, reply
