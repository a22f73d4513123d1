"""``llava15 eval run``: generate answers for benchmarks with the inference engine, then score and report.

Contract:
- Questions come from the benchmark module (official files, official prompts and ``max_new_tokens``;
  ``--max-new-tokens`` caps it for quick checks and is recorded in the settings);
  decoding is greedy. ``--limit N`` keeps the first N questions of each benchmark.
- Sharding: under ``torchrun`` (``RANK``/``WORLD_SIZE`` from the environment) rank r takes the r-th
  contiguous ``ceil(n/world)`` chunk, as the original multi-GPU scripts do, and appends its answers to
  ``<out>/<bench>/shards/answers.rank<r>of<w>.jsonl``. Rank 0 waits for every shard to be complete and
  concatenates them in rank order into ``<out>/<bench>/answers.jsonl`` (= question order), so the merged
  file does not depend on the number of processes.
- Resumable: answers are appended batch by batch (flushed); a rerun skips questions already answered
  (keyed by question id and occurrence, since MME and TextVQA repeat ids) and drops a torn last line.
- Batching: questions are taken in file order (the questions of one image are adjacent in the official
  files), ``--batch-size`` per ``Engine.generate`` call; each image is opened once per batch and the same
  object is passed for all its questions.
- Answers are the official records (``Benchmark.answer_record``); scores go to ``<out>/<bench>/scores.json``,
  all of them to ``<out>/scores.json``, and the Table 2 report to ``<out>/report.{md,json}`` + chart.
  A benchmark whose scoring fails is reported with status ``error`` (and the exit code is 1); the
  others are still scored.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llava15.eval.benchmarks import Benchmark, Question, get_benchmark
from llava15.eval.benchmarks.base import write_json

GenerateFn = Callable[[list[Question], list[list[Any]], int], list[str]]


def dist_env() -> tuple[int, int]:
    """(rank, world size) from the torchrun environment; (0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """The original scripts' chunking: contiguous chunks of ``ceil(n / world)``."""
    size = math.ceil(n / world) if n else 0
    return min(rank * size, n), min((rank + 1) * size, n)


def question_keys(questions: Sequence[Any]) -> list[str]:
    """``"<id>#<k>"``: the k-th occurrence of a question id (ids repeat in MME and TextVQA)."""
    seen: dict[str, int] = {}
    keys = []
    for q in questions:
        qid = str(q.id if isinstance(q, Question) else q["question_id"])
        k = seen.get(qid, 0)
        seen[qid] = k + 1
        keys.append(f"{qid}#{k}")
    return keys


def read_done(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Complete answer records of a shard file. With ``repair`` (only the shard's owner, on resume) a
    torn last line left by a kill is cut off; readers of another process's shard never touch it."""
    if not path.exists():
        return []
    with open(path, "rb") as f:
        data = f.read()
    records, good = [], 0
    # Only newline-terminated lines are complete: the unterminated remainder is a torn or in-flight write.
    for line in data.split(b"\n")[:-1]:
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
        good += len(line) + 1
    if repair and good < len(data):
        with open(path, "r+b") as f:
            f.truncate(min(good, len(data)))
    return records


def answer_shard(bench: Benchmark, questions: list[Question], path: Path, generate: GenerateFn,
                 batch_size: int, model_id: str, log: Callable[[str], None] = print) -> int:  # fmt: skip
    """Answer the questions not yet in ``path`` (appending); returns how many were generated."""
    done = set(question_keys(read_done(path, repair=True)))
    todo = [q for q, k in zip(questions, question_keys(questions)) if k not in done]
    path.parent.mkdir(parents=True, exist_ok=True)
    if not todo:
        return 0
    start = time.perf_counter()
    with open(path, "a", encoding="utf-8") as f:
        for b in range(0, len(todo), batch_size):
            batch = todo[b : b + batch_size]
            opened: dict[Any, Any] = {}  # one decode per image per batch, shared by its questions
            images = []
            for q in batch:
                key = q.image_path if q.image_path is not None else ("row", q.id)
                if q.image_path is None and "image_b64" not in q.extra:
                    images.append([])
                    continue
                if key not in opened:
                    opened[key] = bench.open_image(q)
                images.append([opened[key]])
            texts = generate(batch, images, batch_size)
            for q, text in zip(batch, texts):
                f.write(json.dumps(bench.answer_record(q, text.strip(), model_id), ensure_ascii=False) + "\n")
            f.flush()
            done_n = b + len(batch)
            rate = done_n / (time.perf_counter() - start)
            log(f"{bench.name}: {done_n}/{len(todo)} answered ({rate:.2f} q/s)")
    return len(todo)


def merge_shards(bench_dir: Path, world: int, expected: list[int], timeout_s: float = 7 * 24 * 3600) -> Path:
    """Rank 0: wait until shard r holds ``expected[r]`` records, then concatenate in rank order."""
    paths = [bench_dir / "shards" / f"answers.rank{r}of{world}.jsonl" for r in range(world)]
    deadline = time.monotonic() + timeout_s
    while True:
        counts = [len(read_done(p)) if p.exists() else 0 for p in paths]
        if all(c >= e for c, e in zip(counts, expected)):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{bench_dir}: shards incomplete after {timeout_s}s: {counts} of {expected}")
        time.sleep(1.0)
    out = bench_dir / "answers.jsonl"
    tmp = out.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for p, e in zip(paths, expected):
            for rec in read_done(p)[:e]:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return out


def engine_generate(model: str, device: str | None, max_new_tokens_cap: int | None = None,
                    eager: bool = False) -> tuple[GenerateFn, dict[str, Any]]:
    """Load the checkpoint once; return the batched greedy generate function and the model settings."""
    from llava15.data.conversation import Message
    from llava15.infer.engine import load_generation_bundle

    bundle = load_generation_bundle(model, device=device, fast_decode=False if eager else None)
    engine = bundle.engine

    def generate(batch: list[Question], images: list[list[Any]], batch_size: int) -> list[str]:
        convs = [[Message("user", q.prompt_text)] for q in batch]
        return engine.generate(convs, images, batch_size=batch_size,
                               max_new_tokens=min(batch[0].max_new_tokens, max_new_tokens_cap or 1 << 30),
                               temperature=0.0)  # fmt: skip

    settings = {"model": str(model), "template": bundle.template, "dtype": str(engine.dtype),
                "device": str(engine.device), "image": vars(bundle.image) if hasattr(bundle.image, "__dict__")
                else str(bundle.image), "decoding": "greedy (temperature 0)"}  # fmt: skip
    return generate, settings


def run_eval(args: argparse.Namespace) -> int:
    rank, world = dist_env()
    out = Path(args.out)
    names = [n.strip() for n in args.benchmarks.split(",") if n.strip()]
    benches = [get_benchmark(n) for n in names]  # unknown names fail before the model loads
    device = getattr(args, "device", None)
    if device is None and world > 1:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    cap = getattr(args, "max_new_tokens", None)
    generate, model_settings = engine_generate(args.model, device, cap, eager=bool(getattr(args, "eager", False)))
    if cap:
        model_settings["max_new_tokens_cap"] = cap  # not the official protocol: recorded with the scores
    batch_size, limit = int(args.batch_size), int(getattr(args, "limit", 0) or 0)
    model_id = Path(str(args.model).rstrip("/")).name
    plan: dict[str, list[int]] = {}
    prefix = f"[rank {rank}/{world}] " if world > 1 else ""

    def log(message: str) -> None:
        print(prefix + message, flush=True)

    for bench in benches:
        questions = bench.load(args.data_root)
        if limit:
            questions = questions[:limit]
        lo, hi = shard_bounds(len(questions), rank, world)
        shard = out / bench.name / "shards" / f"answers.rank{rank}of{world}.jsonl"
        answer_shard(bench, questions[lo:hi], shard, generate, batch_size, model_id, log)
        plan[bench.name] = [
            hi_r - lo_r for lo_r, hi_r in (shard_bounds(len(questions), r, world) for r in range(world))
        ]
    if rank != 0:
        return 0
    from llava15.eval.judge import JudgeError
    from llava15.eval.report import environment, write_report
    from llava15.eval.score import format_result, make_judge

    judge = make_judge(args, out)
    results: dict[str, dict[str, Any]] = {}
    status = 0
    for bench in benches:
        answers_path = merge_shards(out / bench.name, world, plan[bench.name])
        answers = [json.loads(line) for line in answers_path.read_text(encoding="utf-8").splitlines() if line]
        try:
            res = bench.score(answers, args.data_root, out / bench.name, judge)
        except (ValueError, FileNotFoundError, KeyError, JudgeError) as e:  # the other benchmarks still count
            res = {
                "benchmark": bench.name,
                "status": "error",
                "value": None,
                "metrics": {},
                "notes": [str(e)],
            }
            status = 1
        res["answers"] = str(answers_path)
        write_json(out / bench.name / "scores.json", res, indent=1)
        results[bench.name] = res
        print(format_result(res))
    settings = {**model_settings, "benchmarks": names, "data_root": str(Path(args.data_root).resolve()),
                "batch_size": batch_size, "limit": limit, "world_size": world, "environment": environment()}  # fmt: skip
    write_json(out / "scores.json", {"results": results, "settings": settings}, indent=1)
    files = write_report(results, out, settings)
    print(f"report: {files['markdown']}")
    return status
