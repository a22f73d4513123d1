"""Training speed of a 7B-shaped LLaVA-1.5 on one GPU: stage-1, LoRA and QLoRA stage-2 steps, samples/s, MFU.

Random weights in the real shapes (CLIP ViT-L/14-336 + Llama-2-7B: 4096 × 32 layers, vocab 32064),
bf16 frozen weights, fp32 trainable ones (projector, LoRA r 128), bf16 autocast, activation
checkpointing, the llava15 step (`train.loop.train_step`: packed rows under llava15's packed attention,
logits only at supervised positions, fused AdamW). Each micro-batch is one packed row of `--micro`
samples of 576 image tokens plus `--text` text tokens (the trailing half supervised).

MFU counts model FLOPs only (no recomputation): LLM 2·N·T forward + 2·N·T backward through the frozen
weights (input gradients only; stage 1 and LoRA both), vision tower 2·N_vis·577 per image forward,
attention 4·T_row·d per layer and token forward (×2 for backward); divided by the card's dense bf16
peak (`--peak-tflops`, H100 SXM 989).

`--stages stage2_qlora` is the LoRA step on an NF4 base (`model.quantize: nf4`, bitsandbytes, double
quantization, bf16 compute, `model.quantize.quantize_for_training`); its peak GiB counts from after the
quantization (the bf16 model it was made from is freed), the figure to hold against a 24 GB card.

`--dry-run` runs the same code on CPU with tiny shapes (used by the tests).
"""

from __future__ import annotations

import argparse
import time

import torch


def build(dry: bool, device: torch.device, layers: int | None = None):
    from transformers import LlavaForConditionalGeneration

    from llava15.model.packed_attention import use_packed_attention
    from llava15.testing import llava_7b_config

    cfg = llava_7b_config(dry)
    if layers:
        cfg.text_config.num_hidden_layers = layers
    cfg.text_config.use_cache = False
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = LlavaForConditionalGeneration(cfg)
    torch.set_default_dtype(torch.float32)
    model.set_attn_implementation("sdpa")
    use_packed_attention(model)  # as the runner does for packed data (figures before commit 18d44da: block mask)
    return model


def make_micro_batches(cfg, n_micro: int, per_row: int, n_text: int, device, seed: int) -> list[dict]:
    """Host batches, as the loader hands them to the step (which moves them to the device)."""
    from llava15.data.packing import boundaries

    gen = torch.Generator().manual_seed(seed)
    n_img = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
    size = cfg.vision_config.image_size
    out = []
    for _ in range(n_micro):
        ids, labels, pos = [], [], []
        for _ in range(per_row):
            text = torch.randint(3, cfg.text_config.vocab_size - 64, (n_text,), generator=gen).tolist()
            sample = [1] + text[:16] + [cfg.image_token_id] * n_img + text[16:]
            half = len(sample) - n_text // 2
            ids += sample
            labels += [-100] * half + sample[half:]
            pos += list(range(len(sample)))
        batch = {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
                 "position_ids": torch.tensor([pos]), "pixel_values": torch.randn(per_row, 3, size, size, generator=gen),
                 "num_samples": per_row}
        batch.update(boundaries(batch["position_ids"], batch["labels"]))  # what the packing collator adds
        out.append(batch)
    return out


def model_flops(model, micro_batches: list[dict], llm_weight_grads: bool = False) -> float:
    cfg = model.config
    lm = model.model.language_model
    # NF4 weights (QLoRA) are packed two to a byte
    n_llm = sum(p.numel() * (2 if p.dtype == torch.uint8 else 1) for n, p in lm.named_parameters()
                if "lora_" not in n and "embed_tokens" not in n)
    n_vis = sum(p.numel() for p in model.model.vision_tower.parameters())
    d, layers = cfg.text_config.hidden_size, cfg.text_config.num_hidden_layers
    total = 0.0
    for b in micro_batches:
        t = b["input_ids"].numel()
        seg = t / b["num_samples"]
        # fwd + input-grad bwd (+ weight-grad bwd when the LLM trains); attention fwd+bwd
        total += (6 if llm_weight_grads else 4) * n_llm * t + 2 * 4 * seg * d * layers * t
        total += 2 * n_vis * (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2 * \
            b["pixel_values"].shape[0]
    return total


CHECKPOINTING = {"stage1": 0, "stage2_lora": 2, "stage2_qlora": 2, "full": 1}  # train.activation_checkpointing: auto


def loader_batches(cfg, args, n_steps: int, tmp: str):
    """Micro-batches through llava15's real data path: JPEG files decoded and preprocessed in DataLoader
    workers, tokenized and packed by the collator (`train.loader`)."""
    import json
    from pathlib import Path

    import numpy as np
    from PIL import Image
    from transformers import AutoTokenizer

    from llava15.data.collate import Collator
    from llava15.data.dataset import LlavaDataset
    from llava15.data.images import ImageSettings
    from llava15.testing import make_tiny_tokenizer
    from llava15.train.batches import BatchPlan, random_order
    from llava15.train.loader import step_batches

    root = Path(tmp)
    tok = AutoTokenizer.from_pretrained(make_tiny_tokenizer(root / "tok"))
    from llava15.model.tokenizer import add_image_token

    cfg.image_token_id = add_image_token(tok)
    size = cfg.vision_config.image_size
    n = n_steps * args.micro * args.accum
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    words = " ".join(["the red circle is left of the blue square"] * (args.text // 9 + 1)).split()[:args.text // 2]
    records = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size + 40, size, 3), dtype=np.uint8)).save(root / "images" / f"{i}.jpg", quality=90)
        records.append({"id": str(i), "image": f"{i}.jpg", "conversations": [
            {"from": "human", "value": "<image>\n" + " ".join(words)}, {"from": "gpt", "value": " ".join(words)}]})
    (root / "data.json").write_text(json.dumps(records))
    n_img = (size // cfg.vision_config.patch_size) ** 2
    ds = LlavaDataset(root / "data.json", tok, "plain", cfg.image_token_id, image_folder=root / "images",
                      num_image_tokens=n_img, model_max_length=4096, image=ImageSettings(size=size))
    collate = Collator(pad_token_id=0, image_token_id=cfg.image_token_id, num_image_tokens=n_img, mode="pack",
                       pack_tokens=4096 * args.micro, image_size=size)
    plan = BatchPlan(len(ds), args.micro * args.accum, args.micro, 1, random_order(len(ds), 0), max_steps=n_steps)
    return step_batches(ds, plan, 0, collate, 0, n_steps, args.workers, pin_memory=torch.cuda.is_available())


def run_stage(name: str, args, device) -> dict:
    import tempfile

    from llava15.config import TrainConfig
    from llava15.model.freeze import apply_freeze
    from llava15.train.distributed import DistInfo
    from llava15.train.loop import StepContext, train_step
    from llava15.train.optim import build_optimizer, build_scheduler

    torch.manual_seed(0)
    base = name.removesuffix("_loader")
    model = build(args.dry_run, device, layers=args.full_layers if base == "full" and not args.dry_run else None)
    cfg = model.config
    if base == "stage1":
        apply_freeze(model, "projector")
        lr = 1e-3
    elif base == "full":
        apply_freeze(model, "projector+llm")
        lr = 2e-5
    else:
        from llava15.model.lora import apply_lora
        if base == "stage2_qlora":
            from llava15.model.quantize import quantize_for_training

            compute = torch.bfloat16 if device.type == "cuda" else torch.float32
            print(quantize_for_training(model, "nf4", device, compute).describe(), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
        model = apply_lora(model, r=args.lora_r, alpha=2 * args.lora_r, dropout=0.05)
        lr = 2e-4
    for p in model.parameters():  # trainable weights are fp32 masters
        if p.requires_grad:
            p.data = p.data.float()
    every = 0 if args.dry_run or args.no_checkpointing else CHECKPOINTING[base]
    if every:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False},
                                              every_n_layers=every)
    model.train()
    tcfg = TrainConfig(lr=lr, projector_lr=2e-5 if base != "stage1" else None, warmup_ratio=0.0)
    opt = build_optimizer(model, tcfg)
    sched = build_scheduler(opt, 1000, tcfg)
    n_img = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
    times = []
    with tempfile.TemporaryDirectory(prefix="llava15-gpu-train-") as tmp:
        if name.endswith("_loader"):
            steps = loader_batches(cfg, args, args.warmup + args.steps, tmp)
        else:
            micro = make_micro_batches(cfg, args.accum, args.micro, args.text, device, seed=1)
            steps = (micro for _ in range(args.warmup + args.steps))
        ctx = StepContext(dist=DistInfo(0, 1, 0, device), image_token_id=cfg.image_token_id,
                          num_image_tokens=n_img, image_size=cfg.vision_config.image_size,
                          text_needs_grad=base != "stage1",
                          autocast_dtype=torch.bfloat16 if device.type == "cuda" else None)
        t0 = time.perf_counter()
        for i, micro in enumerate(steps):  # the loader's time to hand over a step counts
            res = train_step(model, opt, sched, micro, ctx)
            if device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            if i >= args.warmup:
                times.append(now - t0)
            t0 = now
    step_s = sorted(times)[len(times) // 2]
    samples = args.micro * args.accum
    flops = model_flops(model.get_base_model() if hasattr(model, "get_base_model") else model, micro,
                        llm_weight_grads=base == "full")
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    result = {"stage": name, "samples_per_s": samples / step_s, "tokens_per_s": res.tokens / step_s,
              "step_s": step_s, "tflops": flops / step_s / 1e12, "mfu": flops / step_s / (args.peak_tflops * 1e12),
              "loss": res.loss, "mem_gib": mem, "checkpointing": every}
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU (checks the code path)")
    p.add_argument("--steps", type=int, default=3, help="measured steps per stage")
    p.add_argument("--warmup", type=int, default=1, help="warm-up steps per stage")
    p.add_argument("--micro", type=int, default=4, help="samples packed per micro-batch row")
    p.add_argument("--accum", type=int, default=2, help="micro-batches per optimizer step")
    p.add_argument("--text", type=int, default=256, help="text tokens per sample (besides 576 image tokens)")
    p.add_argument("--lora-r", type=int, default=128, help="LoRA rank (alpha = 2r)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the card")
    p.add_argument("--no-checkpointing", action="store_true",
                   help="no activation checkpointing (default: as train.activation_checkpointing=auto: none for "
                        "stage 1, every 2nd layer for LoRA, every layer for full fine-tuning)")
    p.add_argument("--stages", default="stage1,stage1_loader,full,stage2_lora",
                   help="comma-separated: stage1, stage1_loader (the same through the real data path: JPEG files "
                        "decoded in loader workers), full (full fine-tuning, --full-layers layers of 7B width), "
                        "stage2_lora, stage2_qlora")
    p.add_argument("--full-layers", type=int, default=8, help="decoder layers of the `full` stage's 7B-width LLM")
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers of the *_loader stages")
    args = p.parse_args()
    device = torch.device("cpu") if args.dry_run or not torch.cuda.is_available() else torch.device("cuda")
    if args.dry_run:
        args.steps, args.warmup, args.micro, args.accum, args.text, args.workers = 1, 0, 2, 2, 24, 1
    card = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (dry run)"
    print(f"device: {card}; micro {args.micro} samples/row × {args.accum} accumulation, "
          f"{args.text} text tokens + image per sample; activation checkpointing "
          f"{'off' if args.no_checkpointing or args.dry_run else 'as train.activation_checkpointing=auto'}")
    rows = [run_stage(name, args, device) for name in args.stages.split(",")]
    print(f"{'stage':<12} {'samples/s':>10} {'tokens/s':>10} {'step s':>8} {'TFLOP/s':>8} {'MFU':>7} "
          f"{'mem GiB':>8} {'loss':>8} {'ckpt':>5}")
    for r in rows:
        print(f"{r['stage']:<12} {r['samples_per_s']:10.2f} {r['tokens_per_s']:10.0f} {r['step_s']:8.3f} "
              f"{r['tflops']:8.1f} {100 * r['mfu']:6.1f}% {r['mem_gib']:8.1f} {r['loss']:8.4f} {r['checkpointing']:>5}")
    by = {r["stage"]: r for r in rows}
    if "stage1" in by and "stage1_loader" in by:
        print(f"stage 1 through the real loader: {by['stage1_loader']['samples_per_s'] / by['stage1']['samples_per_s']:.1%} "
              "of its pre-built-batch throughput (target ≥ 95%)")


if __name__ == "__main__":
    main()
