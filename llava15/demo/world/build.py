"""`synthesize`: write the whole synthetic world of one seed to a folder, and `llava15 data synth`.

Layout under `out_dir` (paths in `manifest.json` are relative to it):

    train/pretrain.json            stage 1, the 558K caption format (`plain` template)
    train/finetune.json            stage 2, the 665K mixture format (Table 7 kinds), shuffled
    train/images/{pretrain,finetune}/*.png     image folder for both: train/images
    eval/<bench>/...               official benchmark layouts (see benchmarks.py), eval root: eval
    scenes.jsonl                   the scene description of every image (objects, boxes, words)
    corpus.txt                     every generated string, one line each, for training a tokenizer
    manifest.json                  what was written, seed, sizes, counts

Same seed and sizes -> byte-identical files. A different seed -> disjoint scenes everywhere.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from llava15.demo.world import records
from llava15.demo.world.benchmarks import write_mme, write_pope, write_textvqa, write_vqav2
from llava15.demo.world.choice_benchmarks import write_mmbench, write_scienceqa
from llava15.demo.world.text import FORMAT_PROMPTS
from llava15.demo.world.words import WORDS
from llava15.demo.world.world import World, write_json

DEFAULT_TRAIN = 2000
DEFAULT_EVAL = 100
DEFAULT_IMAGE_SIZE = 96
EVAL_WRITERS = {"vqav2": write_vqav2, "pope": write_pope, "mme": write_mme, "scienceqa": write_scienceqa,
                "mmbench": write_mmbench, "textvqa": write_textvqa}


def synthesize(out_dir: str | Path, seed: int, n_train: int = DEFAULT_TRAIN, n_eval: int = DEFAULT_EVAL,
               image_size: int = DEFAULT_IMAGE_SIZE) -> dict:
    """Write the synthetic world of `seed` under `out_dir`; return the absolute paths written.

    `n_train` scenes for each training stage (plus `n_train // 8` text-only conversations),
    `n_eval` images (or problems, or base questions) per benchmark; `image_size` is the side of the
    square object grid in pixels (canvases are that size, or 1.25x it on one side). Either count may be
    0 to skip that part (an evaluation-only world for a fresh seed).
    """
    if n_train < 0 or n_eval < 0:
        raise ValueError(f"synthesize: n_train={n_train} and n_eval={n_eval} must be >= 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = World(seed, image_size)
    manifest: dict = {"seed": seed, "image_size": image_size, "n_train": n_train, "n_eval": n_eval, "counts": {}}

    if n_train:
        images = out / "train" / "images"
        pretrain = [records.pretrain_record(*world.scene("pretrain", i, images, f"pretrain/s{seed}_{i:06d}.png"))
                    for i in range(n_train)]
        finetune = []
        for i in range(n_train):
            finetune += records.finetune_records(*world.scene("finetune", i, images, f"finetune/s{seed}_{i:06d}.png"))
        finetune += [records.text_only_record(f"s{seed}-text-{i:06d}", world.rng("text", i))
                     for i in range(n_train // 8)]
        world.rng("finetune-order", 0).shuffle(finetune)
        world.add_records(pretrain)
        world.add_records(finetune)
        manifest["pretrain"] = {"data_path": write_json(out / "train" / "pretrain.json", pretrain),
                                "image_folder": images, "template": "plain"}
        manifest["finetune"] = {"data_path": write_json(out / "train" / "finetune.json", finetune),
                                "image_folder": images}
        manifest["counts"]["pretrain"] = len(pretrain)
        manifest["counts"]["finetune"] = _kind_counts(finetune)

    if n_eval:
        eval_root = out / "eval"
        manifest["eval"] = {"root": eval_root}
        for name, writer in EVAL_WRITERS.items():
            manifest["eval"][name] = writer(world, eval_root, n_eval)

    world.add_text(*WORDS, *FORMAT_PROMPTS)
    scenes = out / "scenes.jsonl"
    scenes.write_text("".join(json.dumps(s) + "\n" for s in world.scenes), encoding="utf-8")
    corpus = out / "corpus.txt"
    lines = dict.fromkeys(line for s in world.corpus for line in s.split("\n") if line.strip())
    corpus.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    manifest.update(scenes=scenes, corpus=corpus)

    manifest_path = out / "manifest.json"
    write_json(manifest_path, _paths(manifest, lambda p: p.relative_to(out).as_posix()), indent=2)
    return _paths(manifest, lambda p: str(p.resolve())) | {"root": str(out.resolve()),
                                                             "manifest": str(manifest_path.resolve())}


def _paths(obj, convert):
    """`obj` with every path (Path, or str naming a path under it) converted by `convert`."""
    if isinstance(obj, dict):
        return {k: _paths(v, convert) for k, v in obj.items()}
    if isinstance(obj, (Path, str)) and (isinstance(obj, Path) or "/" in obj):
        return convert(Path(obj))
    return obj


def _kind_counts(recs: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in recs:
        kind = r["id"].rsplit("-", 1)[-1].rstrip("0123456789") if "image" in r else "text"
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def run_synth(args: argparse.Namespace) -> int:
    """`llava15 data synth --out DIR --seed S [--train N] [--eval N] [--size PX]`; returns the exit code.

    `args` needs `out` and `seed`; `train`, `eval`, `size` may be missing or None (defaults).
    """
    start = time.perf_counter()

    def option(name: str, default: int) -> int:  # absent or None (the CLI's "not given") -> default
        value = getattr(args, name, None)
        return default if value is None else value

    paths = synthesize(args.out, args.seed, n_train=option("train", DEFAULT_TRAIN),
                       n_eval=option("eval", DEFAULT_EVAL), image_size=option("size", DEFAULT_IMAGE_SIZE))
    manifest = json.loads(Path(paths["manifest"]).read_text(encoding="utf-8"))
    print(f"synthetic world seed {args.seed} written to {paths['root']} in {time.perf_counter() - start:.1f}s")
    for stage in ("pretrain", "finetune"):
        if stage in paths:
            print(f"  {stage}: {paths[stage]['data_path']}  {manifest['counts'][stage]}")
    if "eval" in paths:
        print(f"  eval root: {paths['eval']['root']}  ({', '.join(k for k in paths['eval'] if k != 'root')})")
    print(f"  corpus: {paths['corpus']}\n  manifest: {paths['manifest']}")
    return 0
