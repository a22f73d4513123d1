"""Generation throughput: llava15's engine vs transformers' `generate`, same model, same prompts, same run.

Workload (the project's CPU reference generation workload): the bench-small LLaVA (fp32), prompt = BOS, 4 text
tokens, 576 image tokens, 45 text tokens (626), greedy, exactly 32 new tokens, batch 1 and batch 8;
1 warm-up call each, then N repetitions, medians. Decode tokens/s = batch x 31 / decode time.

- peer: `model.generate(input_ids, attention_mask, pixel_values, max_new_tokens=32, min_new_tokens=32,
  do_sample=False)` (default dynamic cache) under `torch.inference_mode`.
- llava15: `Engine.run` on the same ids and pixels (`ignore_eos`, 32 new tokens).

Timing. The spec times a second call with 1 new token as "prefill" and subtracts it from the 32-token
call; two separately measured medians make that difference noisy on a shared machine (batch 8 is
mostly prefill). Here each 32-token call is split where its first new token comes out (the engine's
first yield; the peer's first `streamer.put` of a new token): prefill = vision + 626-token prefill +
first token, decode = the other 31 steps, as in the spec but from the same call. The peer and the
engine alternate call by call (A B B A ...), so a change in machine load hits both alike.

`--quantize int8|fp8|nf4` compares instead llava15's engine on the full-precision model with the same
engine on the model whose LLM linear layers are quantized (`llava15.load(..., quantize=...)`), batch 1,
alternating call by call; it ends with `batch1 decode ratio <method>/full: N.NNx`, the memory the
weights take in each (parameters, buffers and quantization state, bytes counted) and the peak RSS of a
fresh process per variant that loads the model and decodes 32 tokens.

Run: `python benchmarks/generate_throughput.py [--reps 5] [--threads 2] [--model DIR] [--clock thread]
[--omp-wait passive|active] [--profile] [--compile]`. Ends with `batch1 decode speedup: N.NNx` and
`batch8 decode speedup: N.NNx`. `--clock thread` counts this thread's CPU time (with `--threads 1`:
robust on a shared machine); `--omp-wait` sets OMP_WAIT_POLICY for both (it is read when torch
starts). `--compile` runs the engine with `compile_decode=True` (its warm-up call, not timed, pays the
compilation; the peer is plain `generate` either way). `--profile` also
prints where one engine decode step's time goes at batch 1 (torch.profiler, top operators).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

NEW_TOKENS = 32


CLOCK = time.perf_counter


class _FirstToken:
    """A `generate` streamer that notes when the first new token is handed over (the first `put` is the prompt)."""

    def __init__(self) -> None:
        self.puts = 0
        self.at: float | None = None

    def put(self, value) -> None:
        self.puts += 1
        if self.puts == 2:
            self.at = CLOCK()

    def end(self) -> None:
        pass


def _bench_batch(model, engine, ids: list[int], batch: int, gen, reps: int) -> dict[str, float]:
    """Decode tokens/s of the peer and of the engine at one batch size (same ids and pixels)."""
    import torch

    from llava15.infer.decoding import DecodingParams
    from llava15.infer.engine import Prepared

    size = model.config.vision_config.image_size
    pixels = torch.randn((batch, 3, size, size), generator=gen)
    input_ids = torch.tensor([ids] * batch)
    mask = torch.ones_like(input_ids)
    rows = [Prepared(list(ids), pixels[i:i + 1]) for i in range(batch)]
    params = [DecodingParams(max_new_tokens=NEW_TOKENS, ignore_eos=True)] * batch

    tokens: dict[str, list[list[int]]] = {}

    def peer() -> tuple[float, float]:
        streamer = _FirstToken()
        start = CLOCK()
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=mask, pixel_values=pixels, streamer=streamer,
                                 max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
        end = CLOCK()
        assert out.shape[1] == len(ids) + NEW_TOKENS and streamer.at is not None
        tokens["peer"] = out[:, len(ids):].tolist()
        return streamer.at - start, end - streamer.at

    def ours() -> tuple[float, float]:
        start = CLOCK()
        steps = engine.run(rows, params)
        next(steps)
        first = CLOCK()
        events = list(steps)
        end = CLOCK()
        assert len(events) == NEW_TOKENS - 1
        tokens["llava15"] = [ev.token_ids for ev in sorted(events[-1], key=lambda ev: ev.row)]
        return first - start, end - first

    fns = {"peer": peer, "llava15": ours}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for rep in range(reps):
        for name in (fns if rep % 2 == 0 else reversed(fns)):
            times[name].append(fns[name]())
    print(f"batch {batch}: greedy tokens equal to the peer's: {tokens['llava15'] == tokens['peer']}")
    rates = {}
    for name, ts in times.items():
        prefill = statistics.median(t[0] for t in ts)
        decode = statistics.median(t[1] for t in ts)
        rates[name] = batch * (NEW_TOKENS - 1) / decode
        print(f"batch {batch} {name:8s}: prefill {prefill:.3f} s, decode {decode:.3f} s "
              f"({decode / (NEW_TOKENS - 1) * 1e3:.1f} ms/step), decode tok/s {rates[name]:.1f}", flush=True)
    return rates


def _profile_decode(engine, ids: list[int], gen) -> None:
    """torch.profiler over 32 engine decode steps at batch 1 (prefill excluded): the top operators."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from llava15.infer.decoding import DecodingParams
    from llava15.infer.engine import Prepared

    size = engine.model.config.vision_config.image_size
    rows = [Prepared(list(ids), torch.randn((1, 3, size, size), generator=gen))]
    for _ in engine.run(rows, [DecodingParams(max_new_tokens=2, ignore_eos=True)]):
        pass  # warm-up: one-time work (the lm_head's weight copy) stays out of the profile
    steps = engine.run(rows, [DecodingParams(max_new_tokens=NEW_TOKENS + 1, ignore_eos=True)])
    next(steps)  # prefill
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        t = time.perf_counter()
        for _ in steps:
            pass
        wall = time.perf_counter() - t
    print(f"profile: {wall / NEW_TOKENS * 1e3:.2f} ms per decode step (profiler on)")
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=12,
                                                             max_name_column_width=40, max_shapes_column_width=50))


CHILD = """
import resource, sys, torch
from llava15.infer.decoding import DecodingParams
from llava15.infer.engine import Prepared, load_generation_bundle
torch.set_num_threads(int(sys.argv[3]))
b = load_generation_bundle(sys.argv[1], device="cpu", quantize=sys.argv[2] or None)
size = b.model.config.vision_config.image_size
ids = [1] + [5] * 4 + [b.image_token_id] * b.num_image_tokens + [7] * 45
for _ in b.engine.run([Prepared(ids, torch.zeros(1, 3, size, size))], [DecodingParams(max_new_tokens=32, ignore_eos=True)]):
    pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _child_peak_rss(path, quantize: str | None, threads: int) -> float:
    """Peak RSS (MiB) of a fresh process that loads the model (quantized after loading, as `llava15.load`
    does) and decodes 32 tokens at batch 1."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", CHILD, str(path), quantize or "", str(threads)], check=True,
                         capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def _weights_bytes(model) -> int:
    from llava15.model.quantize import module_bytes

    return sum(module_bytes(m) for m in model.modules())


def _bench_quantized(bundle, path, args, ids: list[int], gen) -> int:
    """Batch-1 decode of the engine on full-precision vs quantized LLM weights (same ids and pixels)."""
    import resource

    import torch

    from llava15.infer.decoding import DecodingParams
    from llava15.infer.engine import Engine, Prepared

    quant = bundle.quantized
    engines = {"full": Engine(bundle, compile_decode=args.compile),
               args.quantize: Engine(quant, compile_decode=args.compile)}
    size = bundle.model.config.vision_config.image_size
    rows = [Prepared(list(ids), torch.randn((1, 3, size, size), generator=gen))]
    params = [DecodingParams(max_new_tokens=NEW_TOKENS, ignore_eos=True)]
    tokens: dict[str, list[int]] = {}

    def run(name: str) -> float:
        steps = engines[name].run(rows, params)
        next(steps)
        first = CLOCK()
        events = list(steps)
        tokens[name] = events[-1][0].token_ids
        return CLOCK() - first

    times: dict[str, list[float]] = {name: [] for name in engines}
    for name in engines:
        run(name)  # warm-up
    for rep in range(args.reps):
        for name in (list(engines) if rep % 2 == 0 else list(reversed(engines))):
            times[name].append(run(name))
    rates = {name: (NEW_TOKENS - 1) / statistics.median(ts) for name, ts in times.items()}
    same = sum(a == b for a, b in zip(tokens["full"], tokens[args.quantize]))
    print(f"batch 1: {args.quantize} greedy tokens equal to full precision's at {same}/{len(tokens['full'])} positions")
    for name, model in (("full", bundle.model), (args.quantize, quant.model)):
        print(f"batch 1 {name:5s}: decode tok/s {rates[name]:.1f}, weights {_weights_bytes(model) / 2**20:.1f} MiB",
              flush=True)
    rss = bundle.peak_rss
    print(f"peak RSS of a process that loads and decodes (one process each; the full-precision load comes before "
          f"the quantization): full {rss['full']:.0f} MiB, {args.quantize} {rss[args.quantize]:.0f} MiB; this "
          f"process (both models) {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; "
          f"load average at the end: {os.getloadavg()[0]:.2f}")
    print(f"batch1 decode ratio {args.quantize}/full: {rates[args.quantize] / rates['full']:.2f}x; weights "
          f"{_weights_bytes(quant.model) / _weights_bytes(bundle.model):.2f}x; peak RSS "
          f"{rss[args.quantize] / rss['full']:.2f}x")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--model", default=None, help="existing checkpoint (default: build bench-small)")
    ap.add_argument("--clock", choices=["wall", "thread"], default="wall",
                    help="thread = CPU time of this thread (with --threads 1: robust on a shared machine)")
    ap.add_argument("--omp-wait", choices=["passive", "active"], default=None,
                    help="OMP_WAIT_POLICY for both (passive: idle OpenMP threads sleep instead of spinning)")
    ap.add_argument("--profile", action="store_true", help="print the top operators of a batch-1 decode step")
    ap.add_argument("--quantize", choices=["int8", "fp8", "nf4"], default=None,
                    help="compare the engine on quantized LLM weights with the full-precision engine (batch 1)")
    ap.add_argument("--compile", action="store_true",
                    help="the engine with compile_decode=True (its warm-up call pays the compilation)")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.thread_time
    if args.omp_wait:
        if "torch" in sys.modules:
            raise SystemExit("--omp-wait must be set before torch is imported (run this script directly)")
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait.upper()

    import torch

    from llava15.infer.engine import Engine, load_generation_bundle

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="llava15-genbench-") as tmp:
        path = args.model
        if path is None:
            from llava15.testing import make_bench_small_llava

            vicuna = Path(__file__).resolve().parents[1].parent / "shared/spec/fixtures/vicuna_tokenizer"
            path = make_bench_small_llava(Path(tmp) / "bench-small", tokenizer_dir=vicuna if vicuna.exists() else None)
        bundle = load_generation_bundle(str(path), device="cpu")
        if args.quantize:
            bundle.quantized = load_generation_bundle(str(path), device="cpu", quantize=args.quantize)
            bundle.peak_rss = {name: _child_peak_rss(path, q, args.threads) for name, q in
                               (("full", None), (args.quantize, args.quantize))}
    model, engine = bundle.model, Engine(bundle, compile_decode=args.compile)
    gen = torch.Generator().manual_seed(0)
    text = torch.randint(3, 31000, (49,), generator=gen).tolist()
    ids = [1] + text[:4] + [bundle.image_token_id] * bundle.num_image_tokens + text[4:]
    print(f"bench-small: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, prompt {len(ids)} "
          f"tokens, {NEW_TOKENS} new tokens, {args.threads} threads, {args.clock} clock, "
          f"engine compile_decode={args.compile}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}")

    if args.quantize:
        return _bench_quantized(bundle, path, args, ids, gen)
    if args.profile:
        _profile_decode(engine, ids, gen)
    results = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        rates = _bench_batch(model, engine, ids, batch, gen, args.reps)
        results[batch] = rates["llava15"] / rates["peer"]
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    for batch, ratio in results.items():
        print(f"batch{batch} decode speedup: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
