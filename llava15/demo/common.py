"""What the demo, the SmolLM2 showcase and the ablations share: the world's sizes, the two training
stages through the real trainer, evaluation through `eval run`, format compliance, the example chat.

The stages run `llava15.train.run.train` with the packaged recipes (`llava15/recipes/demo_stage*.yaml`),
so an installed wheel runs the demo exactly as a checkout does.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from llava15.config import DEFAULT_TEMPLATE, RECIPES_DIR
from llava15.demo.world.text import MULTIPLE_CHOICE as LETTER_PROMPT
from llava15.demo.world.text import SHORT_ANSWER as SHORT_PROMPT

RECIPES = RECIPES_DIR
EVAL_BENCHMARKS = "vqav2,pope,mme,scienceqa,mmbench,textvqa"

# The demo's from-scratch model: small enough to train in minutes on two cores.
# Patch 32: one image token per grid cell (9), which keeps stages 1-2 cheap.
VISION = dict(image_size=96, patch_size=32, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
              num_attention_heads=4, projection_dim=128, hidden_act="quick_gelu")
VISION_PRETRAIN_IMAGES = 16000  # fresh synthetic scenes for the tower's dense pretraining
VISION_PRETRAIN_BATCH = 16  # 1000 steps; held-out shape accuracy 0.97 (benchmarks/history.md)
SMOKE_VISION_PRETRAIN_IMAGES = 64
TEXT = dict(hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=6,
            num_key_value_heads=6, max_position_embeddings=1024)
TOKENIZER_VOCAB = 1024
SYSTEM_PROMPT_WEIGHT = 100  # copies of the vicuna_v1 system prompt in the tokenizer's training texts
# Training scenes per stage, images per benchmark. 100 evaluation images (800 VQA-like questions): three
# fresh seeds of the demo's checkpoint scored +2.8 / -0.4 / -1.3 points from its own seed; with 50
# images, a session-5 checkpoint was off by up to -4.5.
WORLD = dict(n_train=1000, n_eval=100)
SMOKE_WORLD = dict(n_train=24, n_eval=4)
SMOKE_TRAIN = ["train.max_steps=2"]
SMOKE_MAX_NEW_TOKENS = 8  # an untrained model rarely stops: the official 1024 would dominate a smoke run


# What the demo, the showcase and the ablations write at the top of their output folder. `--overwrite`
# removes these, and nothing else, before a run: a rerun then trains afresh instead of resuming the
# previous run's stages from their checkpoints.
OUTPUTS = ("data", "init", "vision_tower", "stage1", "stage2", "eval", "ablations", "results.json")


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


def make_from_scratch_towers(out: Path, corpus: Path, seed: int, vision_images: int = VISION_PRETRAIN_IMAGES
                             ) -> tuple[Path, Path]:
    """Tokenizer trained on the world's corpus, a CLIP vision tower pretrained on synthetic scenes, and a
    random Llama LM, all in HF format."""
    from llava15.data.templates import get_template
    from llava15.demo.tokenizer import train_sentencepiece_tokenizer
    from llava15.demo.vision_pretrain import pretrain_vision_tower

    llm_dir, vision_dir = out / "llm", out / "vision_tower"
    system = get_template(DEFAULT_TEMPLATE).render([], add_generation_prompt=False)
    # The system prompt opens every stage-2 sample, so the tokenizer sees it as often as it is trained
    # on: 85 tokens become 31 (about 40% of stage 2's tokens were system prompt).
    texts = corpus.read_text().splitlines() + [system] * SYSTEM_PROMPT_WEIGHT + ["USER:", "ASSISTANT:"]
    tok = _load_tokenizer(train_sentencepiece_tokenizer(texts, llm_dir, TOKENIZER_VOCAB))
    say(f"pretraining the vision tower on {vision_images} synthetic scenes → {vision_dir}")
    pretrain_vision_tower(vision_dir, VISION, seed=seed, n_images=vision_images, image_size=VISION["image_size"],
                          batch_size=VISION_PRETRAIN_BATCH)
    save_random_llm(llm_dir, len(tok), seed)
    return vision_dir, llm_dir


def save_random_llm(out: Path, vocab_size: int, seed: int, **text: Any) -> None:
    """A random Llama of the demo's shape (`TEXT`, updated by `text`) saved to `out`, ids as the
    demo tokenizer numbers them (pad 0, bos 1, eos 2)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                                      rms_norm_eps=1e-5, **{"tie_word_embeddings": False, **TEXT, **text}))
    lm.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    lm.save_pretrained(out)


def _load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


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


def train_stage2(world: dict, stage1: Path, output_dir: Path, extra: list[str],
                 data_path: str | Path | None = None, recipe: str = "demo_stage2.yaml") -> Path:
    """`recipe` (stage 2) from stage 1's final checkpoint on the world's mixture (or `data_path`)."""
    return train_stage(recipe, [
        f"model.init_checkpoint={stage1 / 'final'}", f"data.path={data_path or world['finetune']['data_path']}",
        f"data.image_folder={world['finetune']['image_folder']}", f"train.output_dir={output_dir}", *extra])


def evaluate(checkpoint: Path, eval_root: Path, out: Path, max_new_tokens: int | None = None) -> dict[str, Any]:
    """Run `llava15 eval run` over the synthetic benchmarks; return demo metrics + the raw scores."""
    from llava15.eval.runner import run_eval

    args = argparse.Namespace(model=str(checkpoint), benchmarks=EVAL_BENCHMARKS, data_root=str(eval_root),
                              out=str(out), batch_size=32, limit=0, judge_url=None, judge_model=None,
                              device=None, max_new_tokens=max_new_tokens)
    run_eval(args)
    scores = json.loads((out / "scores.json").read_text())["results"]
    return {"vqa_accuracy": _metric(scores, "vqav2"), "pope_f1": _metric(scores, "pope"),
            "format_compliance": format_compliance(out), "scores": scores}


def _metric(scores: dict, bench: str) -> float | None:
    value = scores.get(bench, {}).get("value")
    if value is None:
        return None
    return value / 100 if value > 1 else value  # reports use percent; results.json uses fractions


def complies(prompt: str, answer: str) -> bool | None:
    """Does the answer follow the response-format prompt of its question? None: no format prompt."""
    answer = answer.strip()
    if LETTER_PROMPT in prompt:
        return re.fullmatch(r"[A-E]", answer) is not None
    if SHORT_PROMPT in prompt:
        return 0 < len(answer.split()) <= 3 and not answer.endswith(".")
    return None


def format_compliance(eval_out: Path) -> float:
    """Share of answers, over all format-prompted questions, that follow their format prompt."""
    checks = []
    for answers in sorted(eval_out.glob("*/answers.jsonl")):
        for line in answers.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            prompt = str(rec.get("prompt", ""))
            answer = str(rec.get("text", rec.get("prediction", "")))
            ok = complies(prompt, answer)
            if ok is not None:
                checks.append(ok)
    return sum(checks) / len(checks) if checks else 0.0


def example_chat(checkpoint: Path, image_path: Path, question: str, max_new_tokens: int = 48) -> dict[str, str]:
    from llava15.infer.engine import load_generation_bundle

    bundle = load_generation_bundle(str(checkpoint))
    prompts = {"with_format_prompt": f"<image>\n{question}\n{SHORT_PROMPT}", "without_format_prompt":
               f"<image>\n{question}"}
    replies = bundle.generate([[{"role": "user", "content": p}] for p in prompts.values()],
                              [[str(image_path)]] * len(prompts), max_new_tokens=max_new_tokens,
                              temperature=0.0)
    return dict(zip(prompts, replies))


def print_example_chat(image: Path, replies: dict[str, str]) -> None:
    say(f"example chat on {image.name}:")
    for key, reply in replies.items():
        print(f"  {key.replace('_', ' ')}: {reply!r}")


def write_results(out: Path, results: dict[str, Any]) -> Path:
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    return path


