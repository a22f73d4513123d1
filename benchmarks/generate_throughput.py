"""Generation throughput: llava15's engine vs transformers' `generate`, same model, same prompts, same run.

Workload of `../shared/spec/cpu_baseline.md` (c): the bench-small LLaVA (fp32), prompt = BOS, 4 text
tokens, 576 image tokens, 45 text tokens (626), greedy, exactly 32 new tokens, batch 1 and batch 8;
1 warm-up call, median of N repetitions. "Prefill" is the same call with 1 new token; decode tokens/s
= batch x 31 / (total - prefill).

- peer: `model.generate(input_ids, attention_mask, pixel_values, max_new_tokens=32, min_new_tokens=32,
  do_sample=False)` (default dynamic cache) under `torch.inference_mode`.
- llava15: `Engine.run` on the same ids and pixels (`ignore_eos`, 32 new tokens).

Run: `python benchmarks/generate_throughput.py [--reps 3] [--threads 2] [--model DIR]`. Ends with
`batch1 decode speedup: N.NNx` and `batch8 decode speedup: N.NNx`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

NEW_TOKENS = 32


def _median_time(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--model", default=None, help="existing checkpoint (default: build bench-small)")
    args = ap.parse_args(argv)

    import torch

    from llava15.infer.decoding import DecodingParams
    from llava15.infer.engine import Engine, Prepared, load_generation_bundle

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="llava15-genbench-") as tmp:
        path = args.model
        if path is None:
            from llava15.testing import make_bench_small_llava

            vicuna = Path(__file__).resolve().parents[1].parent / "shared/spec/fixtures/vicuna_tokenizer"
            path = make_bench_small_llava(Path(tmp) / "bench-small", tokenizer_dir=vicuna if vicuna.exists() else None)
        bundle = load_generation_bundle(str(path), device="cpu")
    model, engine = bundle.model, Engine(bundle)
    size = model.config.vision_config.image_size
    gen = torch.Generator().manual_seed(0)
    text = torch.randint(3, 31000, (49,), generator=gen).tolist()
    ids = [1] + text[:4] + [bundle.image_token_id] * bundle.num_image_tokens + text[4:]
    print(f"bench-small: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, prompt {len(ids)} "
          f"tokens, {NEW_TOKENS} new tokens, {args.threads} threads, torch {torch.__version__}")

    results = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        pixels = torch.randn((batch, 3, size, size), generator=gen)
        input_ids = torch.tensor([ids] * batch)
        mask = torch.ones_like(input_ids)

        def peer(n: int) -> None:
            with torch.inference_mode():
                out = model.generate(input_ids=input_ids, attention_mask=mask, pixel_values=pixels,
                                     max_new_tokens=n, min_new_tokens=n, do_sample=False)
            assert out.shape[1] == len(ids) + n

        rows = [Prepared(list(ids), pixels[i:i + 1]) for i in range(batch)]

        def ours(n: int) -> None:
            params = [DecodingParams(max_new_tokens=n, ignore_eos=True)] * batch
            steps = sum(1 for _ in engine.run(rows, params))
            assert steps == n

        line = {}
        for name, fn in (("peer", peer), ("llava15", ours)):
            prefill = _median_time(lambda fn=fn: fn(1), args.reps)
            total = _median_time(lambda fn=fn: fn(NEW_TOKENS), args.reps)
            decode = batch * (NEW_TOKENS - 1) / (total - prefill)
            line[name] = decode
            print(f"batch {batch} {name:8s}: prefill {prefill:.3f} s, total {total:.3f} s, "
                  f"new tok/s {batch * NEW_TOKENS / total:.1f}, decode tok/s {decode:.1f}", flush=True)
        results[batch] = line["llava15"] / line["peer"]
    for batch, ratio in results.items():
        print(f"batch{batch} decode speedup: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
