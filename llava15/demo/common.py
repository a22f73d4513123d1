"""What the demo, the SmolLM2 showcase and the ablations share: the world's sizes, the pretrained parts
they start from, the two training stages through the real trainer, the results file.

The stages run `llava15.train.run.train` with the packaged recipes (`llava15/recipes/demo_stage*.yaml`),
so an installed wheel runs the demo exactly as a checkout does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llava15.config import RECIPES_DIR

RECIPES = RECIPES_DIR
EVAL_BENCHMARKS = "vqav2,pope,mme,scienceqa,mmbench,textvqa"

# Training scenes per stage, images per benchmark. 100 evaluation images (800 VQA-like questions): three
# fresh seeds of the demo's checkpoint scored +2.8 / -0.4 / -1.3 points from its own seed; with 50
# images, an earlier checkpoint was off by up to -4.5. 2000 training scenes instead of 1000: VQA-like
# 0.882 against 0.866, what-is-at 0.72 against 0.69, for 76 s more (benchmarks/RESULTS.md).
WORLD = dict(n_train=2000, n_eval=100)
SMOKE_WORLD = dict(n_train=24, n_eval=4)
SMOKE_TRAIN = ["train.max_steps=2"]
SMOKE_MAX_NEW_TOKENS = 8  # an untrained model rarely stops: the official 1024 would dominate a smoke run


# What the demo, the showcase and the ablations write at the top of their output folder. `--overwrite`
# removes these, and nothing else, before a run: a rerun then trains afresh instead of resuming the
# previous run's stages from their checkpoints.
OUTPUTS = ("data", "init", "vision_tower", "stage1", "stage1_align", "stage2", "eval", "eval_blank", "eval_blank_data",
           "ablations", "results.json")


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def clear_previous_outputs(out: Path, keep: str | None = None) -> None:
    """Remove the `OUTPUTS` of an earlier run from `out`, except one holding `keep` (an --eval-only checkpoint)."""
    import shutil

    kept = Path(keep).resolve() if keep else None
    for name in OUTPUTS:
        path = out / name
        if kept is not None and (kept == path or path in kept.parents):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def pretrained_parts(root: Path | None = None) -> tuple[Path, Path]:
    """(vision tower, world-LM) folders of the demo's pretrained parts, after checking their hashes
    (`llava15 demo pretrain` makes them; the package ships them in `llava15/demo/pretrained/`)."""
    from llava15.demo.pretrain import PRETRAINED, check_pretrained

    root = root or PRETRAINED
    check_pretrained(root)
    return root / "vision_tower", root / "world_lm"


def train_stage(recipe: str, overrides: list[str]) -> Path:
    from llava15.config import load_recipe
    from llava15.train.run import train

    cfg = load_recipe(RECIPES / recipe, overrides)
    say(f"training {recipe} → {cfg.train.output_dir}")
    return Path(train(cfg))


def train_stage1(world: dict, vision_dir: Path, llm_dir: Path, output_dir: Path, extra: list[str],
                 recipe: str = "demo_stage1.yaml") -> Path:
    """`recipe` (stage 1) on the world's captions; `extra` overrides come last and win."""
    return train_stage(recipe, [
        f"model.vision_tower={vision_dir}", f"model.llm={llm_dir}",
        f"data.path={world['pretrain']['data_path']}", f"data.image_folder={world['pretrain']['image_folder']}",
        f"train.output_dir={output_dir}", *extra])


def align_stage1(world: dict, stage1: Path, output_dir: Path, smoke: bool = False) -> tuple[Path, dict]:
    """Stage 1's alignment term (`demo.align`) on stage 1's own scenes: `(output_dir, its report)`."""
    from llava15.demo.align import align_projector, read_scenes

    scenes = read_scenes(world["scenes"], "pretrain")
    say(f"aligning the projector to the LM's symbolic scenes ({len(scenes)} stage-1 scenes) → {output_dir}")
    report = align_projector(stage1 / "final", scenes, world["pretrain"]["image_folder"], output_dir / "final",
                             **({"steps": 2} if smoke else {}))
    say(f"alignment: mean squared error {report['mse_before']} → {report['mse_after']} "
        f"(targets' mean square {report['target_mean_square']}), {report['seconds']}s")
    return output_dir, report


def train_stage2(world: dict, stage1: Path, output_dir: Path, extra: list[str],
                 data_path: str | Path | None = None, recipe: str = "demo_stage2.yaml") -> Path:
    """`recipe` (stage 2) from stage 1's final checkpoint on the world's mixture (or `data_path`)."""
    return train_stage(recipe, [
        f"model.init_checkpoint={stage1 / 'final'}", f"data.path={data_path or world['finetune']['data_path']}",
        f"data.image_folder={world['finetune']['image_folder']}", f"train.output_dir={output_dir}", *extra])


def write_results(out: Path, results: dict[str, Any]) -> Path:
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    return path


