"""Training throughput: the peer (plain transformers) vs llava15, same model, same samples, same run.

Workload (the project's CPU reference workload): the bench-small LLaVA (49.3 M params, fp32), batches of 8
samples (log-normal text lengths, 1 in 10 text-only, 576 image tokens after a 36-token prefix, the
trailing 30-70 % of the text supervised), 1 warm-up + N measured steps, medians.

- peer: right-padded batch with attention_mask, `model(..., labels=...)` (full-vocabulary logits, HF
  loss), `loss.backward()`, `AdamW.step()`, `zero_grad()`.
- llava15: `llava15.train.loop.train_step` on the same 8 samples as the runner batches them by default:
  llava15's packing collator puts them in one row (no padding, no mask), attention runs per sample
  (`model.packed_attention`), logits only at supervised positions, the last decoder layer on supervised
  rows only (`model.last_layer_rows`), fused AdamW, and glibc malloc told to keep freed tensors for
  reuse (`train.host_memory`, which `llava15 train` applies on CPU; the peer's process is left as is).

Each (workload, stage) runs in its own process so its peak RSS is its own; the two processes of a stage
are alive together and step alternately on the same batches (A/B then B/A), so machine load hits
both alike. Run:
`python benchmarks/train_throughput.py [--steps 5] [--threads 2] [--clock wall|cpu] [--passive-omp]
[--compile] [--precision fp32|bf16] [--peer-precision fp32|bf16] [--peer-host-memory]` (`--compile`:
llava15's step with `train.compile`, each decoder layer but the last compiled; the warm-up step pays
the compilation; `--peer-host-memory`: the peer's process gets llava15's malloc tuning too)
(`--threads 1 --clock cpu` gives ratios that machine load hardly moves). Ends with three lines:
`stage1 speedup: N.NNx`, `stage2 speedup: N.NNx`, `peak RSS ratio: N.NN` (llava15 / peer, stage 2).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 8
N_IMAGE_TOKENS = 576
PREFIX = 36


def make_samples(step: int, image_token_id: int, seed: int = 0) -> list[dict]:
    """The 8 samples of batch `step` (deterministic): ids, labels, an image flag."""
    import numpy as np

    rng = np.random.default_rng(seed * 1000 + step)
    samples = []
    for _ in range(BATCH):
        n_text = int(np.clip(round(rng.lognormal(np.log(130), 0.65)), 40, 600))
        text = rng.integers(3, 31000, n_text).tolist()
        has_image = rng.random() >= 0.1
        n_sup = int(round(n_text * rng.uniform(0.3, 0.7)))
        text_labels = [-100] * (n_text - n_sup) + text[n_text - n_sup:]
        if has_image:
            ids = [1] + text[:PREFIX] + [image_token_id] * N_IMAGE_TOKENS + text[PREFIX:]
            labels = [-100] + text_labels[:PREFIX] + [-100] * N_IMAGE_TOKENS + text_labels[PREFIX:]
        else:
            ids, labels = [1] + text, [-100] + text_labels
        samples.append({"ids": ids, "labels": labels, "image": has_image,
                        "pixels_seed": seed * 1000 + step * BATCH + len(samples)})
    return samples


def _pixels(sample: dict):
    import torch

    return torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(sample["pixels_seed"]))


def peer_batch(samples: list[dict]) -> dict:
    import torch

    width = max(len(s["ids"]) for s in samples)
    ids = torch.zeros(len(samples), width, dtype=torch.long)
    labels = torch.full((len(samples), width), -100)
    mask = torch.zeros(len(samples), width, dtype=torch.long)
    for r, s in enumerate(samples):
        n = len(s["ids"])
        ids[r, :n], labels[r, :n], mask[r, :n] = torch.tensor(s["ids"]), torch.tensor(s["labels"]), 1
    pix = [_pixels(s) for s in samples if s["image"]]
    return {"input_ids": ids, "labels": labels, "attention_mask": mask,
            "pixel_values": torch.cat(pix) if pix else None}


def ours_micro_batches(samples: list[dict], image_token_id: int) -> list[dict]:
    """The runner's default micro-batch: llava15's packing collator puts the 8 samples in one row (no
    padding, no mask, positions restarting per sample) for the packed attention.

    Samples are given to it the way the dataset yields them (one image id per image, expanded by the
    collator), so this is the runner's own path with `train.micro_batch_size=8` and `data.pack_tokens: 0`."""
    import torch

    from llava15.data.collate import Collator

    collate = Collator(pad_token_id=0, image_token_id=image_token_id, num_image_tokens=N_IMAGE_TOKENS,
                       mode="pack", image_size=336, pack_tokens=sum(len(s["ids"]) for s in samples))
    items = []
    for s in samples:
        ids, labels = list(s["ids"]), list(s["labels"])
        if s["image"]:  # back to the dataset's form: one image id per image
            at = ids.index(image_token_id)
            del ids[at + 1:at + N_IMAGE_TOKENS], labels[at + 1:at + N_IMAGE_TOKENS]
        items.append({"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                      "pixel_values": _pixels(s) if s["image"] else None})
    return [collate(items)]


def set_stage(model, stage: int) -> None:
    model.requires_grad_(False)
    model.model.multi_modal_projector.requires_grad_(True)
    if stage == 2:
        model.model.language_model.requires_grad_(True)
        model.lm_head.requires_grad_(True)


def worker(args: argparse.Namespace) -> None:
    """Build one workload, then run the step named by each stdin line, answering one JSON line each."""
    import torch
    from transformers import LlavaForConditionalGeneration

    torch.set_num_threads(args.threads)
    if args.worker == "ours" or args.peer_host_memory:  # as `llava15 train` does on CPU (train.host_memory)
        from llava15.train.host_memory import keep_freed_host_memory

        keep_freed_host_memory()
    model = LlavaForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32)
    model.train()
    set_stage(model, args.stage)
    image_token_id = model.config.image_token_id
    bf16 = args.precision == "bf16"
    if args.worker == "peer":
        # the plain-transformers way to mixed precision: autocast around the forward
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

        def step(samples):
            batch = peer_batch(samples)
            with autocast:
                out = model(**batch)
            out.loss.backward()
            opt.step()
            opt.zero_grad()
            return float(out.loss.detach())
    else:
        from llava15.config import TrainConfig
        from llava15.model.last_layer_rows import LastLayerRows
        from llava15.model.packed_attention import use_packed_attention
        from llava15.train.compile import compile_decoder_layers
        from llava15.train.distributed import DistInfo
        from llava15.train.loop import StepContext, train_step
        from llava15.train.optim import build_optimizer, build_scheduler
        from llava15.train.precision import bf16_on_one_device

        # in the runner's order (train.setup.build_model): attention, precision, last layer, compilation
        use_packed_attention(model)
        autocast_dtype = bf16_on_one_device(model) if bf16 else None  # train.precision=bf16
        last_layer = LastLayerRows(model)  # train.last_layer_supervised_only (default true)
        if args.compile:
            compile_decoder_layers(model, skip_last=True)
        cfg = TrainConfig(lr=1e-5, lr_scheduler="constant", warmup_ratio=0.0)
        opt = build_optimizer(model, cfg)
        sched = build_scheduler(opt, 100, cfg)
        ctx = StepContext(dist=DistInfo(0, 1, 0, torch.device("cpu")), image_token_id=image_token_id,
                          num_image_tokens=N_IMAGE_TOKENS, image_size=336, text_needs_grad=args.stage == 2,
                          autocast_dtype=autocast_dtype, last_layer=last_layer)

        def step(samples):
            return train_step(model, opt, sched, ours_micro_batches(samples, image_token_id), ctx).loss
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() == "exit":
            break
        samples = make_samples(int(line), image_token_id)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step(samples)
        print(json.dumps({"time": time.perf_counter() - t0, "cpu": time.process_time() - c0, "loss": loss,
                          "real_tokens": sum(len(s["ids"]) for s in samples)}), flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mib": rss}), flush=True)


class Worker:
    """A workload in its own process (its own peak RSS), driven one step at a time."""

    def __init__(self, model_dir: Path, workload: str, stage: int, threads: int, passive: bool,
                 compile_layers: bool, precision: str, peer_host_memory: bool = False):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        if passive:  # idle OpenMP threads sleep instead of spinning (helps on an oversubscribed machine)
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        cmd = [sys.executable, __file__, "--worker", workload, "--stage", str(stage), "--model", str(model_dir),
               "--threads", str(threads), "--precision", precision, *(["--compile"] if compile_layers else []),
               *(["--peer-host-memory"] if peer_host_memory else [])]
        self.name = f"{workload} stage {stage}"
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.steps: list[dict] = []
        self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} worker died (exit {self.proc.wait()}); see its stderr above")
        return json.loads(line)

    def step(self, i: int) -> dict:
        self.proc.stdin.write(f"{i}\n")
        self.proc.stdin.flush()
        self.steps.append(self._read())
        return self.steps[-1]

    def finish(self, clock: str = "time") -> dict:
        self.proc.stdin.write("exit\n")
        self.proc.stdin.flush()
        rss = self._read()["peak_rss_mib"]
        self.proc.wait()
        measured = self.steps[1:]
        median_s = statistics.median(s[clock] for s in measured)
        return {"times": [s[clock] for s in self.steps], "losses": [s["loss"] for s in self.steps],
                "median_s": median_s, "samples_per_s": BATCH / median_s,
                "cpu_s": statistics.median(s["cpu"] for s in measured),
                "tokens_per_s": statistics.median(s["real_tokens"] / s[clock] for s in measured),
                "peak_rss_mib": rss}


def run_stage(model_dir: Path, stage: int, steps: int, threads: int, passive: bool, clock: str,
              compile_layers: bool, precision: dict[str, str], peer_host_memory: bool = False) -> dict:
    """Peer and llava15 alive side by side, stepping alternately (A/B, B/A, ...) on the same batches."""
    workers = {name: Worker(model_dir, name, stage, threads, passive, compile_layers and name == "ours",
                            precision[name], peer_host_memory and name == "peer") for name in ("peer", "ours")}
    paired = []
    for i in range(steps + 1):
        order = ("peer", "ours") if i % 2 == 0 else ("ours", "peer")
        for name in order:
            workers[name].step(i)
        if i:
            paired.append(workers["peer"].steps[-1][clock] / workers["ours"].steps[-1][clock])
    results = {name: w.finish(clock) for name, w in workers.items()}
    for name, r in results.items():
        print(f"[stage{stage}] {name:5s} steps s: " + " ".join(f"{t:.2f}" for t in r["times"]) +
              " | losses " + " ".join(f"{x:.5f}" for x in r["losses"][:3]), flush=True)
    print(f"[stage{stage}] per-step {clock} ratios peer/llava15: " + " ".join(f"{x:.2f}" for x in paired))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="measured steps (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch/OMP threads")
    parser.add_argument("--passive-omp", action="store_true",
                        help="OMP_WAIT_POLICY=PASSIVE for both workloads (fairer on a busy, shared machine)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="time steps by wall clock, or by this process's CPU time (robust when the "
                             "machine is shared; use with --threads 1)")
    parser.add_argument("--compile", action="store_true",
                        help="llava15's step with train.compile (each decoder layer compiled)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="llava15's step precision: bf16 is `train.precision=bf16` (frozen weights stored "
                             "in bf16, bf16 autocast; fast where the CPU has AMX / avx512_bf16)")
    parser.add_argument("--peer-precision", choices=["fp32", "bf16"], default="fp32",
                        help="the peer's precision: fp32 is the spec's peer; bf16 wraps its forward in "
                             "torch.autocast, the plain-transformers way to mixed precision")
    parser.add_argument("--peer-host-memory", action="store_true",
                        help="give the peer's process llava15's glibc malloc tuning too (train.host_memory)")
    parser.add_argument("--worker", choices=["peer", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--stage", type=int, choices=[1, 2], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    from llava15.testing import make_bench_small_llava

    results = {}
    with tempfile.TemporaryDirectory(prefix="llava15-bench-") as tmp:
        model_dir = make_bench_small_llava(Path(tmp) / "bench-small")
        for stage in (2, 1):
            for name, r in run_stage(model_dir, stage, args.steps, args.threads, args.passive_omp,
                                     "time" if args.clock == "wall" else "cpu", args.compile,
                                     {"peer": args.peer_precision, "ours": args.precision},
                                     args.peer_host_memory).items():
                results[(name, stage)] = r
    print(f"\nclock: {args.clock}, {args.threads} thread(s){', OMP_WAIT_POLICY=PASSIVE' if args.passive_omp else ''}"
          f", llava15 train.compile={args.compile}, precision: peer {args.peer_precision}, llava15 {args.precision}"
          f", malloc tuning: llava15 yes, peer {'yes' if args.peer_host_memory else 'no'}")
    print(f"{'stage':6s} {'workload':9s} {'samples/s':>10s} {'real tok/s':>11s} {'median step s':>14s} "
          f"{'CPU s/step':>11s} {'peak RSS MiB':>13s}")
    for stage in (1, 2):
        for workload in ("peer", "ours"):
            r = results[(workload, stage)]
            name = "peer" if workload == "peer" else "llava15"
            print(f"{stage:<6d} {name:9s} {r['samples_per_s']:10.3f} {r['tokens_per_s']:11.0f} "
                  f"{r['median_s']:14.2f} {r['cpu_s']:11.2f} {r['peak_rss_mib']:13.0f}")
        first = abs(results[("ours", stage)]["losses"][0] - results[("peer", stage)]["losses"][0])
        print(f"stage {stage}: first-step loss |llava15 - peer| = {first:.2e}")
    s1 = results[("ours", 1)]["samples_per_s"] / results[("peer", 1)]["samples_per_s"]
    s2 = results[("ours", 2)]["samples_per_s"] / results[("peer", 2)]["samples_per_s"]
    rss = results[("ours", 2)]["peak_rss_mib"] / results[("peer", 2)]["peak_rss_mib"]
    print(f"stage1 speedup: {s1:.2f}x")
    print(f"stage2 speedup: {s2:.2f}x")
    print(f"peak RSS ratio: {rss:.2f}")


if __name__ == "__main__":
    main()
