"""Batch-1 decode speed of a 7B-shaped LLaVA-1.5 on one GPU, against the memory-bandwidth limit.

Random weights in the real shapes (CLIP ViT-L/14-336 + Llama-2-7B: 4096 x 32 layers, vocab 32064), bf16,
prompt = BOS + 4 text + 576 image + 45 text tokens (626), greedy, `--new-tokens` tokens through
llava15's `Engine.run` (eager, and with each decode step replayed as a CUDA graph), and
transformers' `generate` on the same ids for reference. The limit is what
one decode step must read from HBM: the LLM's weights (blocks + LM head) plus the KV cache at the
context length, divided by the card's bandwidth (`--bandwidth-tbs`; default by card name: H100 SXM
3.35, H200 4.8, A100 2.0 TB/s; ~247 tok/s for LLaVA-1.5-7B on an H100).

Rows: transformers `generate`; the engine eager; with CUDA graphs; compiled + CUDA graphs (the decode
path `chat`, `serve` and `eval` take on a GPU by default: `fast_decode_options`); then, with
`--quantize int8,fp8` (the default on CUDA), the compiled + graphed engine on a copy of the model whose
LLM linear layers are quantized weight-only (`model.quantize.quantize_for_inference`), each against the
bandwidth limit of the bytes it reads (its quantized layers + the bf16 lm_head + KV), and as a ratio to
the bf16 engine on the same path.

`--tiny` runs the same code on CPU with tiny shapes (used by the tests). Prints one line per
measurement and ends with `decode tok/s (batch 1): N (P% of the bandwidth limit L tok/s)`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

BANDWIDTH_TBS = {"H200": 4.8, "H100": 3.35, "A100": 2.0}


def build(tiny: bool, device: torch.device, dtype: torch.dtype):
    from transformers import LlavaForConditionalGeneration

    from llava15.testing import llava_7b_config

    cfg = llava_7b_config(tiny)
    cfg._attn_implementation = "sdpa"
    with torch.device(device):
        torch.manual_seed(0)
        model = LlavaForConditionalGeneration(cfg).to(dtype)
    return model.eval()


def _timed(fn, device: torch.device, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on CPU (dry run for the tests)")
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--bandwidth-tbs", type=float, default=None)
    ap.add_argument("--quantize", default=None,
                    help="comma-separated weight-only methods to add (int8, fp8, nf4; default int8,fp8 on CUDA)")
    args = ap.parse_args(argv)

    from llava15.data.images import ImageSettings
    from llava15.infer.decoding import DecodingParams
    from llava15.infer.engine import Engine, Prepared, fast_decode_options
    from llava15.model.format import num_image_tokens
    from llava15.model.load import LlavaBundle
    from llava15.testing import make_tiny_tokenizer

    if not args.tiny and not torch.cuda.is_available():
        print("gpu_decode.py needs CUDA (use --tiny for a CPU dry run)")
        return 2
    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    model = build(args.tiny, device, dtype)
    with tempfile.TemporaryDirectory(prefix="llava15-gpudecode-") as tmp:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(make_tiny_tokenizer(Path(tmp) / "tok"))
    size = model.config.vision_config.image_size
    n_img = num_image_tokens(model.config)
    image_id = model.config.image_token_id
    bundle = LlavaBundle(model=model, tokenizer=tokenizer, template="vicuna_v1", image=ImageSettings(size=size),
                         image_token_id=image_id, num_image_tokens=n_img)
    engine = Engine(bundle)
    gen = torch.Generator().manual_seed(0)
    text = torch.randint(3, 300, (49,), generator=gen).tolist()
    ids = [1] + text[:4] + [image_id] * n_img + text[4:]
    pixels = torch.randn((1, 3, size, size), generator=gen)
    row = Prepared(ids, pixels)
    n = args.new_tokens

    def ours(k: int) -> None:
        assert sum(1 for _ in engine.run([row], [DecodingParams(max_new_tokens=k, ignore_eos=True)])) == k

    input_ids = torch.tensor([ids], device=device)
    pix = pixels.to(device, dtype)

    def peer(k: int) -> None:
        with torch.inference_mode():
            model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pix,
                           max_new_tokens=k, min_new_tokens=k, do_sample=False)

    lm = model.model.language_model
    weight_bytes = sum(p.numel() * p.element_size() for p in lm.layers.parameters())
    weight_bytes += sum(p.numel() * p.element_size() for p in model.lm_head.parameters())
    tc = model.config.text_config
    kv_per_token = 2 * tc.num_hidden_layers * tc.num_key_value_heads * (tc.hidden_size // tc.num_attention_heads)
    kv_bytes = kv_per_token * torch.finfo(dtype).bits // 8 * (len(ids) + n // 2)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    bw = args.bandwidth_tbs or next((v for k, v in BANDWIDTH_TBS.items() if k in name), 3.35)
    limit = bw * 1e12 / (weight_bytes + kv_bytes)
    print(f"device {name}; LLM weights {weight_bytes / 1e9:.2f} GB + KV {kv_bytes / 1e9:.3f} GB per step; "
          f"prompt {len(ids)} tokens, {n} new tokens; bandwidth {bw} TB/s -> limit {limit:.1f} tok/s", flush=True)
    graphed = Engine(bundle, cuda_graphs=True)

    def ours_graphs(k: int) -> None:
        assert sum(1 for _ in graphed.run([row], [DecodingParams(max_new_tokens=k, ignore_eos=True)])) == k

    fast = Engine(bundle, **fast_decode_options(device))

    def ours_fast(k: int, engine=fast) -> None:
        assert sum(1 for _ in engine.run([row], [DecodingParams(max_new_tokens=k, ignore_eos=True)])) == k

    runs = [("transformers generate", peer), ("llava15 engine", ours)]
    if device.type == "cuda":
        runs.append(("llava15 engine + CUDA graphs", ours_graphs))
        runs.append(("llava15 engine compiled + CUDA graphs (default)", ours_fast))
    rates = {}
    _measure(runs, rates, device, args, n)
    best = max((k for k in rates if k.startswith("llava15")), key=rates.get)
    rate = rates[best]
    methods = args.quantize if args.quantize is not None else ("int8,fp8" if device.type == "cuda" else "")
    for method in [m for m in methods.split(",") if m]:
        _quantized_row(method, model, bundle, row, device, bw, kv_bytes, rates, args, n)
    print(f"decode tok/s (batch 1): {rate:.1f} ({100 * rate / limit:.0f}% of the bandwidth limit {limit:.1f} tok/s; "
          f"{best}; transformers generate {rates.get('transformers generate', float('nan')):.1f})")
    return 0


def _quantized_row(method: str, model, bundle, row, device, bw: float, kv_bytes: int, rates: dict, args,
                   n: int) -> None:
    """The default decode path on a copy of the model with weight-only `method` LLM layers."""
    import copy
    import dataclasses

    from llava15.infer.decoding import DecodingParams
    from llava15.infer.engine import Engine, fast_decode_options
    from llava15.model.quantize import module_bytes, quantize_for_inference

    try:
        qmodel = copy.deepcopy(model)
        summary = quantize_for_inference(qmodel, method)
    except Exception as exc:
        print(f"{method}: not run: {type(exc).__name__}: {exc}", flush=True)
        return
    engine = Engine(dataclasses.replace(bundle, model=qmodel), **fast_decode_options(device))
    lm = qmodel.model.language_model
    read = sum(module_bytes(m) for m in lm.layers.modules()) + module_bytes(qmodel.lm_head)
    limit = bw * 1e12 / (read + kv_bytes)
    label = f"llava15 engine compiled + CUDA graphs, {method} weights"

    def fn(k: int, engine=engine) -> None:
        assert sum(1 for _ in engine.run([row], [DecodingParams(max_new_tokens=k, ignore_eos=True)])) == k

    _measure([(label, fn)], rates, device, args, n)
    if label in rates:
        base = rates.get("llava15 engine compiled + CUDA graphs (default)") or float("nan")
        print(f"{method}: {summary.describe()}; reads {read / 1e9:.2f} GB + KV per step -> limit {limit:.1f} tok/s; "
              f"{rates[label]:.1f} tok/s = {100 * rates[label] / limit:.0f}% of it, {rates[label] / base:.2f}x the "
              "bf16 engine on the same path", flush=True)
    del engine, qmodel
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _measure(runs, rates: dict, device, args, n: int) -> None:
    for label, fn in runs:
        try:
            prefill = _timed(lambda fn=fn: fn(1), device, args.reps)
            total = _timed(lambda fn=fn: fn(n), device, args.reps)
        except Exception as exc:  # report and go on: the other rows are still worth having
            print(f"{label}: failed: {type(exc).__name__}: {exc}", flush=True)
            continue
        rates[label] = (n - 1) / (total - prefill)
        print(f"{label}: prefill {prefill * 1e3:.1f} ms, total {total * 1e3:.1f} ms, "
              f"decode {rates[label]:.1f} tok/s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
