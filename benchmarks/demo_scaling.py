"""What the from-scratch demo model needs: the demo pipeline in parallel variants (issue #7's study).

Every variant starts from the same world, tokenizer, vision tower and LM init — the `data/` and `init/`
folders of a finished `llava15 demo --out ROOT` — and runs stage 1, stage 2 and the synthetic
evaluation, printing VQA-like accuracy, POPE-like F1, compliance and per-kind VQA accuracy. Variants
change the stage-1/2 recipes (epochs, batch, lr), the number of training scenes, the LM's shape, and
whether the LM first learns to copy ([BOS] x x on random tokens: an induction circuit, which
question-driven lookup needs), and the stage-2 mixture (round 4: the share kept of each record kind).
Built for one GPU, where 8 variants run at once in ~3-6 minutes; figures in benchmarks/RESULTS.md
("What the from-scratch demo needs") and benchmarks/history.md (every round).

    python benchmarks/demo_scaling.py --root demo-output --out /tmp/scaling --round 1
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

COPY = [3000, 1200]  # cosine schedule length, steps actually run (the circuit forms at ~800)
S1E4_S2E2 = {"s1": ["train.epochs=4"], "s2": ["train.epochs=2"]}
BATCH4 = ["train.global_batch_size=4", "train.micro_batch_size=4"]
SMOKE_TRAIN = ["train.max_steps=2"]
H256 = {"hidden_size": 256, "intermediate_size": 683, "num_attention_heads": 8, "num_key_value_heads": 8}
VQA_HEAVY = ({"vqa": 1.0, "mc": 1.0}, 0.25)
VQA_ONLY = ({"vqa": 1.0}, 0.0)
ROUNDS: dict[int, dict[str, dict]] = {
    1: {"base": {}, "copy": {"copy": COPY}, "s2x4": {"s2": ["train.epochs=4"]},
        "copy_s2x4": {"copy": COPY, "s2": ["train.epochs=4"]},
        "data4k": {"n_train": 4000, "s1": ["train.epochs=2"]},
        "copy_data4k": {"copy": COPY, "n_train": 4000, "s1": ["train.epochs=2"]},
        "copy_s1x2_s2x4": {"copy": COPY, "s1": ["train.epochs=16"], "s2": ["train.epochs=4"]},
        "copy_data4k_s2x2": {"copy": COPY, "n_train": 4000, "s1": ["train.epochs=2"], "s2": ["train.epochs=2"]}},
    2: {"copy_bs4": {"copy": COPY, "s2": BATCH4},
        "copy_bs4_s1e4": {"copy": COPY, "s1": ["train.epochs=4"], "s2": BATCH4},
        "copy_lr2e3": {"copy": COPY, "s2": ["train.lr=2e-3"]},
        "copy_bs2": {"copy": COPY, "s2": ["train.global_batch_size=2", "train.micro_batch_size=2"]},
        "copy_s1e4_s2e2": {"copy": COPY, **S1E4_S2E2},
        "copy_bs4_e2": {"copy": COPY, "s2": [*BATCH4, "train.epochs=2"]},
        "copy_batch16_bs4": {"copy": [*COPY, 1e-3, 16], "s2": BATCH4},
        "copy_data2k_s1e4_bs4": {"copy": COPY, "n_train": 2000, "s1": ["train.epochs=4"], "s2": BATCH4}},
    3: {"tied": {"text": {"tie_word_embeddings": True}, "copy": COPY, **S1E4_S2E2},
        "L2_H256": {"text": {**H256, "num_hidden_layers": 2}, "copy": COPY, **S1E4_S2E2},
        "L6": {"text": {"num_hidden_layers": 6}, "copy": COPY, **S1E4_S2E2},
        "H256": {"text": H256, "copy": COPY, **S1E4_S2E2},
        "tied_H256": {"text": {**H256, "tie_word_embeddings": True}, "copy": COPY, **S1E4_S2E2},
        "copy_s1e4_s2e2_seed1": {"copy": COPY, "s1": ["train.epochs=4", "train.seed=1"],
                                 "s2": ["train.epochs=2", "train.seed=1"]},
        "heads12": {"text": {"num_attention_heads": 12, "num_key_value_heads": 12}, "copy": COPY, **S1E4_S2E2},
        "s1e4_s2e2": S1E4_S2E2},
    # Round 4: the stage-2 mixture. The loss is a mean over supervised tokens, so the long answers
    # (descriptions, conversations, regions) outweigh the one-word VQA answers the metric scores.
    4: {"base": {}, "s2x4": {"s2": ["train.epochs=4"]},
        "vqa_heavy": {"mix": VQA_HEAVY}, "vqa_heavy_e2": {"mix": VQA_HEAVY, "s2": ["train.epochs=2"]},
        "vqa_only": {"mix": VQA_ONLY}, "vqa_only_e3": {"mix": VQA_ONLY, "s2": ["train.epochs=3"]},
        "vqa_only_e8": {"mix": VQA_ONLY, "s2": ["train.epochs=8"]},
        "s1e2_vqa_heavy_e3": {"mix": VQA_HEAVY, "s1": ["train.epochs=2"], "s2": ["train.epochs=3"]}},
}


def stage2_mixture(src: Path, dst: Path, keep: dict[str, float], other: float) -> Path:
    """`src`'s stage-2 records with each kind (the id's last field, mc0-mc3 as "mc") kept at its share in
    `keep` (`other` for unnamed kinds), every n-th record so the choice is deterministic."""
    records = json.loads(src.read_text())
    by_kind = collections.defaultdict(list)
    for r in records:
        kind = r["id"].rsplit("-", 1)[-1]  # text-only records end in a number
        by_kind["mc" if kind.startswith("mc") else "text" if kind.isdigit() else kind].append(r)
    kept = []
    for kind, rs in by_kind.items():
        share = keep.get(kind, other)
        kept += [r for i, r in enumerate(rs) if int(i * share) != int((i + 1) * share)]
    dst.write_text(json.dumps(kept))
    print(f"stage-2 mixture: {len(kept)} of {len(records)} records", flush=True)
    return dst


def copy_pretrain(src: Path, dst: Path, schedule: int, steps: int, lr: float = 1e-3, batch: int = 32) -> None:
    """Train the LM in `src` on [BOS] x x (x: 6-23 random tokens), loss on the predictable copy."""
    import torch
    from transformers import LlamaForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    lm = LlamaForCausalLM.from_pretrained(src).to(device)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(lm.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    warm = max(1, schedule // 20)

    def factor(s: int) -> float:
        return min((s + 1) / warm, 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, schedule - warm)))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    for step in range(steps):
        k = int(torch.randint(6, 24, (1,), generator=gen))
        x = torch.randint(3, lm.config.vocab_size - 8, (batch, k), generator=gen)
        ids = torch.cat([torch.ones(batch, 1, dtype=torch.long), x, x], 1).to(device)
        labels = ids.clone()
        labels[:, : k + 2] = -100  # the first copied token is unpredictable
        loss = lm(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"copy step {step} loss {loss.item():.3f}", flush=True)
    lm.to("cpu").save_pretrained(dst)
    copy_missing_files(src, dst)


def fresh_lm(like: Path, dst: Path, text: dict) -> None:
    """A random Llama of the demo's shape updated by `text`, with `like`'s tokenizer files."""
    from llava15.demo import common as demo

    demo.save_random_llm(dst, json.loads((like / "config.json").read_text())["vocab_size"], 0, **text)
    copy_missing_files(like, dst)


def copy_missing_files(src: Path, dst: Path) -> None:
    """The tokenizer (and any other file) of `src` that the LM folder `dst` lacks."""
    for f in os.listdir(src):
        if not (dst / f).exists():
            shutil.copy(src / f, dst / f)


def per_kind_accuracy(eval_data: Path, eval_out: Path) -> dict[str, float]:
    """VQA-like exact-match accuracy by the question's first two words ("Where is", "How many", ...)."""
    d = eval_data / "vqav2"
    gold = {a["question_id"]: a["multiple_choice_answer"] for a in
            json.loads((d / "v2_mscoco_test-dev2015_annotations.json").read_text())["annotations"]}
    asked = {q["question_id"]: q["question"] for q in
             json.loads((d / "v2_OpenEnded_mscoco_test-dev2015_questions.json").read_text())["questions"]}
    hits = collections.defaultdict(list)
    for line in (eval_out / "vqav2" / "answers.jsonl").read_text().splitlines():
        r = json.loads(line)
        hits[" ".join(asked[r["question_id"]].split()[:2])].append(r["text"].strip().lower() == gold[r["question_id"]])
    return {k: round(sum(v) / len(v), 2) for k, v in hits.items()}


def run_variant(root: Path, out: Path, cfg: dict, smoke: bool = False) -> dict:
    from llava15.demo import common as demo

    out.mkdir(parents=True, exist_ok=True)
    data, llm = root / "data", root / "init" / "llm"
    if cfg.get("n_train"):
        from llava15.demo.world import synthesize

        data = out / "data"
        synthesize(data, seed=0, n_train=cfg["n_train"], n_eval=0)
    if cfg.get("text"):
        fresh_lm(llm, out / "llm_init", cfg["text"])
        llm = out / "llm_init"
    if cfg.get("copy"):
        copy_pretrain(llm, out / "llm_copy", *([20, 2] if smoke else cfg["copy"]))
        llm = out / "llm_copy"
    manifest = json.loads((data / "manifest.json").read_text())  # paths relative to `data`, as synthesize wrote them
    world = {stage: {key: str(data / manifest[stage][key]) for key in ("data_path", "image_folder")}
             for stage in ("pretrain", "finetune")}
    s2_data = []
    if cfg.get("mix"):
        s2_data = [f"data.path={stage2_mixture(Path(world['finetune']['data_path']), out / 'finetune.json', *cfg['mix'])}"]
    t0 = time.time()
    stage1 = demo.train_stage1(world, root / "init" / "vision_tower", llm, out / "stage1",
                               ["train.log_steps=100", *cfg.get("s1", []), *SMOKE_TRAIN * smoke])
    t1 = time.time()
    stage2 = demo.train_stage2(world, stage1, out / "stage2",
                               ["train.log_steps=100", *s2_data, *cfg.get("s2", []), *SMOKE_TRAIN * smoke])
    t2 = time.time()
    eval_data = root / "data" / "eval"  # every variant on the same evaluation sets
    m = demo.evaluate(stage2 / "final", eval_data, out / "eval", 4 if smoke else None)
    return {**{k: round(m[k], 3) for k in ("vqa_accuracy", "pope_f1", "format_compliance")},
            "stage1_s": round(t1 - t0), "stage2_s": round(t2 - t1), "kinds": per_kind_accuracy(eval_data, out / "eval")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="a finished `llava15 demo --out` folder (data/, init/)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--round", type=int, choices=sorted(ROUNDS), default=1)
    ap.add_argument("--limit", type=float, default=420, help="seconds before unfinished variants are stopped")
    ap.add_argument("--smoke", action="store_true", help="2 steps per stage: checks the script, measures nothing")
    ap.add_argument("--variant", help=argparse.SUPPRESS)  # one variant, in a child process
    args = ap.parse_args()
    root, out = Path(args.root).resolve(), Path(args.out).resolve()
    variants = ROUNDS[args.round]
    if args.variant:
        result = run_variant(root, out / args.variant, variants[args.variant], args.smoke)
        (out / f"{args.variant}.json").write_text(json.dumps(result))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}
    procs = {name: subprocess.Popen(
        [sys.executable, __file__, "--root", str(root), "--out", str(out), "--round", str(args.round),
         "--variant", name, *["--smoke"] * args.smoke], env=env, stdout=open(out / f"{name}.log", "w"), stderr=subprocess.STDOUT)
        for name in variants}
    start = time.time()
    while any(p.poll() is None for p in procs.values()) and time.time() - start < args.limit:
        time.sleep(5)
    print(f"{'variant':<24}{'VQA':>7}{'POPE F1':>9}{'comply':>8}{'s1 s':>6}{'s2 s':>6}  per-kind VQA")
    for name, proc in procs.items():
        if proc.poll() is None:
            proc.kill()
        path = out / f"{name}.json"
        if not path.exists():
            print(f"{name:<24} no result (log: {out / f'{name}.log'})")
            continue
        r = json.loads(path.read_text())
        print(f"{name:<24}{r['vqa_accuracy']:>7.3f}{r['pope_f1']:>9.3f}{r['format_compliance']:>8.3f}"
              f"{r['stage1_s']:>6}{r['stage2_s']:>6}  {r['kinds']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
