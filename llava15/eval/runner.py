"""``llava15 eval run``: generate answers for benchmarks with the inference engine, then score and report.

Contract:
- Data first: every requested benchmark's data (files, question count, images; official layout or
  lmms-lab snapshot, ``Benchmark.check``) is checked before the model loads. Anything missing is one
  ``error:`` line naming the files (exit 2); benchmarks of the same ``--out`` whose answers are already
  complete are still scored (nothing finished is lost).
- ``--protocol official``: the original scripts' decoding, bit for bit: one question at a time through
  ``model.generate`` (greedy, ``use_cache``) in the checkpoint's half precision (float16 unless the
  checkpoint is bfloat16; the original builder loads float16), output = ``tokenizer.batch_decode(...,
  skip_special_tokens=True)[0].strip()``, and ScienceQA/MMBench images padded before the RGB conversion
  as their scripts do. ``--protocol fast`` (default): the batched engine (sorted, left-padded batches of
  ``--batch-size``; greedy, equal to batch size 1 in exact arithmetic, not bit-equal in half precision)
  with images converted to RGB first. The protocol is recorded in every score and in ``<out>/run.json``;
  an ``--out`` holding answers of the other protocol, or of other weights (``model_fingerprint``), is
  refused.
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
  others are still scored. Each score gets a 95 % bootstrap interval ``ci95`` (``--bootstrap`` resamples,
  ``--seed``); ``<out>/<bench>/scores.json`` keeps the resampled units for ``llava15 eval compare``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llava15.eval.benchmarks import Benchmark, Question, get_benchmark
from llava15.eval.benchmarks.base import DataCheck, write_json
from llava15.eval.bootstrap import DEFAULT_SAMPLES, attach_ci

PROTOCOLS = ("official", "fast")

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
                 batch_size: int, model_id: str, log: Callable[[str], None] = print,
                 prepare: Callable[[Any], Any] | None = None) -> int:  # fmt: skip
    """Answer the questions not yet in ``path`` (appending); returns how many were generated.
    ``prepare`` turns each opened image into what the model is given (see ``model_image``)."""
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
                key = q.image_path or q.extra.get("image_key") or ("row", q.id)
                if q.image_path is None and "image_b64" not in q.extra and "hub_image" not in q.extra:
                    images.append([])
                    continue
                if key not in opened:
                    image = bench.open_image(q)
                    opened[key] = prepare(image) if prepare is not None else image
                images.append([opened[key]])
            texts = generate(batch, images, batch_size)
            for q, text in zip(batch, texts):
                f.write(json.dumps(bench.answer_record(q, text.strip(), model_id), ensure_ascii=False) + "\n")
            f.flush()
            done_n = b + len(batch)
            rate = done_n / (time.perf_counter() - start)
            log(f"{bench.name}: {done_n}/{len(todo)} answered ({rate:.2f} q/s)")
    return len(todo)


def model_image(bench: Benchmark, image: Any, protocol: str, image_settings: Any) -> Any:
    """What the model is shown: an RGB image. Under ``official``, benchmarks whose script pads before
    converting (``pads_before_rgb``) get that order when the checkpoint pads (``aspect_ratio == 'pad'``);
    otherwise (and always under ``fast``) the image is converted to RGB first, i.e. shown as it is."""
    from llava15.data.images import pad_then_rgb, to_rgb

    if image is None:
        return None
    if protocol == "official" and bench.pads_before_rgb and getattr(image_settings, "aspect_ratio", "") == "pad":
        return pad_then_rgb(image, tuple(image_settings.mean))
    return to_rgb(image)


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


def half_dtype(model: str | Path) -> str:
    """The checkpoint's half precision: bfloat16 if its config says so, else float16 (the original
    ``load_pretrained_model`` loads every LLaVA-1.5 checkpoint in float16)."""
    cfg = Path(str(model)) / "config.json"
    if cfg.exists():
        config = json.loads(cfg.read_text(encoding="utf-8"))
        text = config.get("text_config") or {}
        dtypes = {config.get("torch_dtype"), config.get("dtype"), text.get("torch_dtype"), text.get("dtype")}
        if "bfloat16" in dtypes:
            return "bfloat16"
    return "float16"


def engine_generate(model: str, device: str | None, max_new_tokens_cap: int | None = None,
                    protocol: str = "fast", eager: bool = False) -> tuple[GenerateFn, dict[str, Any], Any]:  # fmt: skip
    """Load the checkpoint once; return the generate function of the protocol, the model settings and
    the checkpoint's image settings."""
    import torch

    from llava15.data.conversation import Message
    from llava15.data.images import preprocess_with
    from llava15.infer.engine import load_generation_bundle

    dtype = half_dtype(model) if protocol == "official" else None
    bundle = load_generation_bundle(model, device=device, dtype=dtype, fast_decode=False if eager else None)
    engine = bundle.engine
    cap = max_new_tokens_cap or 1 << 30

    def generate(batch: list[Question], images: list[list[Any]], batch_size: int) -> list[str]:
        convs = [[Message("user", q.prompt_text)] for q in batch]
        return engine.generate(convs, images, batch_size=batch_size,
                               max_new_tokens=min(batch[0].max_new_tokens, cap), temperature=0.0)  # fmt: skip

    def generate_official(batch: list[Question], images: list[list[Any]], batch_size: int) -> list[str]:
        s, out = bundle.image, []
        for q, ims in zip(batch, images):  # model_vqa*.py: one question at a time
            ids = torch.tensor([engine.prompt_ids([Message("user", q.prompt_text)])], device=engine.device)
            kw = {}
            if ims:
                kw["pixel_values"] = preprocess_with(ims[0], s)[None].to(engine.device, engine.dtype)
            with torch.inference_mode():
                gen = bundle.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                            num_beams=1, top_p=None, temperature=None, use_cache=True,
                                            max_new_tokens=min(q.max_new_tokens, cap), pad_token_id=engine.pad_id,
                                            **kw)  # fmt: skip
            out.append(bundle.tokenizer.batch_decode(gen[:, ids.shape[1] :], skip_special_tokens=True)[0].strip())
        return out

    settings = {"model": str(model), "template": bundle.template, "dtype": str(engine.dtype),
                "device": str(engine.device), "image": vars(bundle.image) if hasattr(bundle.image, "__dict__")
                else str(bundle.image), "decoding": "greedy (temperature 0)", "protocol": protocol}  # fmt: skip
    if protocol == "official":
        settings["decoding"] = ("greedy, batch size 1, transformers generate + tokenizer.batch_decode "
                                "(model_vqa*.py)")
        settings["image_order"] = "ScienceQA/MMBench: pad in the image's own mode, then RGB (as their scripts)"
        return generate_official, settings, bundle.image
    settings["decoding"] = "greedy, batched engine (length-sorted, left-padded batches)"
    settings["image_order"] = "RGB first, then pad (every benchmark)"
    return generate, settings, bundle.image


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 2


def model_fingerprint(model: str) -> str | None:
    """sha256 over a local checkpoint's weight files: name, size, first and last MiB of each (a retrained
    or changed checkpoint differs in all of them; a copy does not; a 14 GB model is read in milliseconds).
    None for a hub id (its name is recorded instead) or a folder without weight files."""
    folder = Path(model)
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) if folder.is_dir() else []
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            h.update(fh.read(1 << 20))
    return h.hexdigest()


def _check_resumable(out: Path, protocol: str, model: str) -> str | None:
    """``<out>/run.json`` records the protocol and the model's weights fingerprint; answers of the other
    protocol or of other weights (a retrained checkpoint in the same folder) are never mixed in."""
    path = out / "run.json"
    fingerprint = model_fingerprint(model)
    if path.exists():
        run = json.loads(path.read_text(encoding="utf-8"))
        previous = run.get("protocol", "fast")
        if previous != protocol:
            return (f"{out} holds a --protocol {previous} run; resume it with --protocol {previous} "
                    f"or write this one to another --out")
        before = run.get("weights_sha256")
        if before and fingerprint and before != fingerprint:
            return (f"{out} holds answers of other weights ({run.get('model')}, fingerprint {before[:12]}; "
                    f"{model} now: {fingerprint[:12]}); write this run to another --out or remove {out}")
    write_json(path, {"protocol": protocol, "model": str(model), "weights_sha256": fingerprint}, indent=1)
    return None


def _image_note(check: DataCheck, protocol: str) -> str | None:
    """How many images the padding order matters for (ScienceQA, MMBench), and which order was used."""
    from llava15.eval.benchmarks.base import pads_in_own_mode

    padded = {m: c for m, c in check.image_modes.items() if pads_in_own_mode(m)}
    raising = {m: c for m, c in check.image_modes.items() if not pads_in_own_mode(m)}
    notes = []
    if padded:
        how = ("padded in their own mode, then converted to RGB, as the original script does"
               if protocol == "official" else
               "converted to RGB first (--protocol official pads them first, as the original script does)")
        modes = ", ".join(f"{m}: {c}" for m, c in sorted(padded.items()))
        notes.append(f"{sum(padded.values())} non-square non-RGB image(s) ({modes}) where the padding order "
                     f"changes the pixels: {how}")
    if raising:
        modes = ", ".join(f"{m}: {c}" for m, c in sorted(raising.items()))
        notes.append(f"{sum(raising.values())} non-square image(s) ({modes}) that the original script cannot "
                     "pad before converting (it raises): converted to RGB first")
    return "; ".join(notes) or None


def _finish(res: dict[str, Any], args: argparse.Namespace, protocol: str, answers_path: Path) -> dict[str, Any]:
    attach_ci(res, int(getattr(args, "bootstrap", DEFAULT_SAMPLES) or 0), int(getattr(args, "seed", 0) or 0))
    res["protocol"] = protocol
    res["answers"] = str(answers_path)
    return res


def _score_one(bench: Benchmark, answers_path: Path, data: Any, out_dir: Path, judge: Any) -> tuple[dict, int]:
    from llava15.eval.judge import JudgeError

    answers = [json.loads(line) for line in answers_path.read_text(encoding="utf-8").splitlines() if line]
    try:
        return bench.score(answers, data, out_dir, judge), 0
    except (ValueError, FileNotFoundError, KeyError, JudgeError) as e:  # the other benchmarks still count
        return {"benchmark": bench.name, "status": "error", "value": None, "metrics": {}, "notes": [str(e)]}, 1


def _score_finished(checks: list[DataCheck], args: argparse.Namespace, out: Path, protocol: str) -> list[str]:
    """Score the benchmarks of ``out`` whose answers are complete (used when another one's data is missing)."""
    from llava15.eval.score import format_result, make_judge

    scored = []
    for check in checks:
        path = out / check.benchmark / "answers.jsonl"
        if check.missing or not path.exists() or len(read_done(path)) < check.n_questions:
            continue
        bench = get_benchmark(check.benchmark)
        res, _ = _score_one(bench, path, check.source, out / bench.name, make_judge(args, out))
        write_json(out / bench.name / "scores.json", _finish(res, args, protocol, path), indent=1)
        print(format_result(res), flush=True)
        scored.append(bench.name)
    return scored


def run_eval(args: argparse.Namespace) -> int:
    from llava15.eval.score import parse_question_files

    rank, world = dist_env()
    out = Path(args.out)
    names = [n.strip() for n in args.benchmarks.split(",") if n.strip()]
    protocol = getattr(args, "protocol", None) or "fast"
    if protocol not in PROTOCOLS:
        return _fail(f"--protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    try:
        benches = [get_benchmark(n) for n in names]  # unknown names fail before the model loads
        qfiles = parse_question_files(getattr(args, "question_file", None), names)
    except (KeyError, ValueError) as e:
        return _fail(str(e).strip("'\""))
    limit = int(getattr(args, "limit", 0) or 0)
    checks = [b.check(args.data_root, qfiles.get(b.name), limit) for b in benches]
    bad = [c for c in checks if c.missing]
    if bad:
        kept = _score_finished(checks, args, out, protocol) if rank == 0 and out.is_dir() else []
        tail = f" (finished benchmarks scored: {', '.join(kept)})" if kept else ""
        return _fail("data check failed, no model loaded: " + " | ".join(c.message for c in bad) + tail)
    if rank == 0:
        problem = _check_resumable(out, protocol, args.model)
        if problem:
            return _fail(problem)
    device = getattr(args, "device", None)
    if device is None and world > 1:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    cap = getattr(args, "max_new_tokens", None)
    generate, model_settings, image_settings = engine_generate(args.model, device, cap, protocol,
                                                               eager=bool(getattr(args, "eager", False)))
    if cap:
        model_settings["max_new_tokens_cap"] = cap  # not the official protocol: recorded with the scores
    batch_size = 1 if protocol == "official" else int(args.batch_size)
    model_id = Path(str(args.model).rstrip("/")).name
    plan: dict[str, list[int]] = {}
    prefix = f"[rank {rank}/{world}] " if world > 1 else ""

    def log(message: str) -> None:
        print(prefix + message, flush=True)

    for bench, check in zip(benches, checks):
        questions = check.questions if check.questions is not None else bench.load(check.source)[: limit or None]
        lo, hi = shard_bounds(len(questions), rank, world)
        shard = out / bench.name / "shards" / f"answers.rank{rank}of{world}.jsonl"
        answer_shard(bench, questions[lo:hi], shard, generate, batch_size, model_id, log,
                     prepare=lambda im, b=bench: model_image(b, im, protocol, image_settings))  # fmt: skip
        plan[bench.name] = [
            hi_r - lo_r for lo_r, hi_r in (shard_bounds(len(questions), r, world) for r in range(world))
        ]
    if rank != 0:
        return 0
    from llava15.eval.report import environment, write_report
    from llava15.eval.score import format_result, make_judge

    judge = make_judge(args, out)
    results: dict[str, dict[str, Any]] = {}
    status = 0
    for bench, check in zip(benches, checks):
        answers_path = merge_shards(out / bench.name, world, plan[bench.name])
        res, failed = _score_one(bench, answers_path, check.source, out / bench.name, judge)
        status = max(status, failed)
        _finish(res, args, protocol, answers_path)
        note = _image_note(check, protocol)
        if note:
            res.setdefault("notes", []).append(note)
            res["images_padding_order_sensitive"] = dict(check.image_modes)
        write_json(out / bench.name / "scores.json", res, indent=1)
        results[bench.name] = {k: v for k, v in res.items() if k != "bootstrap"}
        print(format_result(res))
    data_root = str(args.data_root) if str(args.data_root) == "hf" else str(Path(args.data_root).resolve())
    settings = {**model_settings, "benchmarks": names, "data_root": data_root,
                "data": {c.benchmark: c.source.describe() for c in checks},
                "batch_size": batch_size, "limit": limit, "world_size": world, "environment": environment()}  # fmt: skip
    write_json(out / "scores.json", {"results": results, "settings": settings}, indent=1)
    files = write_report(results, out, settings)
    print(f"report: {files['markdown']}")
    return status
