"""`llava15 demo pretrain --out DIR`: make the demo's pretrained parts, as the paper starts from some.

Three parts, all from the synthetic world and nothing downloaded:
1. the tokenizer: SentencePiece BPE (1024 pieces, LLaMA's settings) trained on the world's texts, the
   vicuna_v1 system prompt weighted as often as stage 2 uses it, with `<image>` and `<pad>` added;
2. the vision tower: a small CLIP ViT (96 px, patch 32) trained on drawn scenes with dense per-patch
   labels (`demo.vision_pretrain`), the stand-in for CLIP;
3. the world-LM: a small Llama trained on the world's text and symbolic scenes, never pixels
   (`demo.world_lm`), the stand-in for Vicuna.
Writes `DIR/vision_tower/` and `DIR/world_lm/` (HF folders, weights in bf16) and `DIR/MANIFEST.json`:
the command, seeds, the commit, every file's sha256, and held-out accuracies. The copy committed in
`llava15/demo/pretrained/` (package data) is what `make demo` starts from; this command reproduces it
(docs/demo.md). `--smoke` runs every part for a few steps (the file layout and manifest keys only).
`--init DIR` continues the world-LM of an earlier output DIR on the focus mixture
(`world_lm.focus_mixture`: `--focus` names the drill kinds asked twice as often; `--separate` names
words whose collapsed embedding rows are moved apart first), keeping DIR's tokenizer and tower as they
are; its manifest names DIR's command and commit as `parent` (with DIR's own `parent`: the whole chain).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from llava15.config import DEFAULT_TEMPLATE

PRETRAINED = Path(__file__).resolve().parent / "pretrained"  # the committed copy (package data)
MANIFEST = "MANIFEST.json"
MANIFEST_KEYS = ("command", "seed", "commit", "data_seed", "seconds", "files", "vision_tower", "world_lm")
VISION = dict(image_size=96, patch_size=32, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
              num_attention_heads=4, projection_dim=128, hidden_act="quick_gelu")
TEXT = dict(hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=6,
            num_key_value_heads=6, max_position_embeddings=1024)
TOKENIZER_VOCAB = 1024
SYSTEM_PROMPT_WEIGHT = 100  # copies of the vicuna_v1 system prompt among the tokenizer's training texts
# corpus_*: scenes (with rendered words) and images per benchmark whose texts train the tokenizer;
# heldout: symbolic scenes the world-LM's accuracy per question kind is measured on
FULL = dict(corpus_train=400, corpus_eval=20, vision_images=32000, vision_batch=16, lm_steps=4000,
            lm_row_tokens=4096, heldout=50)
FOCUS_STEPS, FOCUS_LR = 3000, 2e-3  # the continuation's defaults (`--init`)
SMOKE = dict(corpus_train=16, corpus_eval=2, vision_images=32, vision_batch=16, lm_steps=2, lm_row_tokens=512,
             heldout=4)


def say(msg: str) -> None:
    print(f"[pretrain] {msg}", flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def train_tokenizer(out: Path, seed: int, n_train: int, n_eval: int) -> Path:
    """The world's tokenizer, `<image>`/`<pad>` included, saved in `out`."""
    from transformers import AutoTokenizer

    from llava15.data.templates import get_template
    from llava15.demo.tokenizer import train_sentencepiece_tokenizer
    from llava15.demo.world import synthesize
    from llava15.model.tokenizer import add_image_token

    vicuna, plain = get_template(DEFAULT_TEMPLATE), get_template("plain")
    system = vicuna.render([], add_generation_prompt=False)
    with tempfile.TemporaryDirectory(prefix="llava15-corpus-") as tmp:
        world = synthesize(tmp, seed=seed, n_train=n_train, n_eval=n_eval)
        corpus = Path(world["corpus"]).read_text().splitlines()
        rendered = [_rendered(r, i, vicuna) for i, r in enumerate(json.loads(Path(world["finetune"]["data_path"]).read_text()))]
        rendered += [_rendered(r, i, plain) for i, r in enumerate(json.loads(Path(world["pretrain"]["data_path"]).read_text()))]
    # The system prompt opens every stage-2 sample: weighted so, its 85 tokens become ~31. The rendered
    # conversations make the template's own words ("USER:", "ASSISTANT:") single pieces, as in Vicuna.
    texts = corpus + rendered + [system] * SYSTEM_PROMPT_WEIGHT
    train_sentencepiece_tokenizer(texts, out, TOKENIZER_VOCAB)
    tok = AutoTokenizer.from_pretrained(out)
    add_image_token(tok)
    tok.save_pretrained(out)
    return out


def _rendered(record: dict, index: int, template) -> str:
    from llava15.data.formats import record_to_conversation

    text = template.render(record_to_conversation(record, index, "corpus").messages, add_generation_prompt=False)
    return text.replace("<image>", " ").replace("</s>", " ")


def to_bf16(folder: Path) -> None:
    """Rewrite a saved model's weights in bf16 (half the bytes shipped; training loads them in fp32)."""
    from safetensors.torch import load_file, save_file

    for f in folder.glob("*.safetensors"):
        tensors = {k: v.to("cpu").bfloat16() if v.is_floating_point() else v for k, v in load_file(str(f)).items()}
        save_file(tensors, str(f), metadata={"format": "pt"})


def pretrain(out: Path, seed: int, sizes: dict[str, int], command: str) -> dict[str, Any]:
    from llava15.demo.vision_pretrain import pretrain_vision_tower
    from llava15.demo.world_lm import pretrain_world_lm

    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    say(f"tokenizer ({TOKENIZER_VOCAB} pieces) on the world's texts → {out / 'world_lm'}")
    train_tokenizer(out / "world_lm", seed, sizes["corpus_train"], sizes["corpus_eval"])
    say(f"vision tower on {sizes['vision_images']} drawn scenes → {out / 'vision_tower'}")
    pretrain_vision_tower(out / "vision_tower", VISION, seed=seed, n_images=sizes["vision_images"],
                          image_size=VISION["image_size"], batch_size=sizes["vision_batch"])
    to_bf16(out / "vision_tower")
    say(f"world-LM, {sizes['lm_steps']} steps of {sizes['lm_row_tokens']} tokens → {out / 'world_lm'}")
    lm = pretrain_world_lm(out / "world_lm", out / "world_lm", TEXT, seed=seed, steps=sizes["lm_steps"],
                           row_tokens=sizes["lm_row_tokens"], eval_every=max(1, sizes["lm_steps"] // 8),
                           heldout=sizes["heldout"], log=say)
    vision = json.loads((out / "vision_tower" / "vision_pretrain.json").read_text())
    return write_manifest(out, command, seed, start, sizes, lm,
                          {"shape": VISION, "heldout": vision["heldout"], "seconds": vision["seconds"]})


def write_manifest(out: Path, command: str, seed: int, start: float, sizes: dict[str, int], lm: dict,
                   vision: dict, **more: Any) -> dict[str, Any]:
    """`out/MANIFEST.json` over the files `out` holds now (`more`: further keys, as `parent`)."""
    manifest = {"command": command, "seed": seed, "commit": _commit(), "data_seed": seed,
                "seconds": round(time.time() - start, 1), "sizes": sizes, "files": file_hashes(out),
                "vision_tower": vision,
                "world_lm": {"shape": TEXT, "heldout": lm["heldout"], "seconds": lm["seconds"], "tokens": lm["tokens"]},
                **more}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def continue_pretrain(out: Path, init: Path, seed: int, sizes: dict[str, int], command: str,
                      focus: tuple[str, ...] | None = None, separate: tuple[str, ...] = ()) -> dict[str, Any]:
    """`--init`: `init`'s world-LM trained on for `sizes["lm_steps"]` steps of the focus mixture (`focus`:
    the drill kinds asked twice as often; None: `world_lm.FOCUS_DEFAULT`), the embedding rows of the
    `separate` words moved apart first (`symbolic.separate_word_rows`)."""
    from transformers import AutoTokenizer

    from llava15.demo.symbolic import WordEmbedder, word_rows
    from llava15.demo.world_lm import FOCUS_DEFAULT, focus_mixture, pretrain_world_lm

    focus = focus or FOCUS_DEFAULT
    mix = focus_mixture(focus)

    start = time.time()
    parent = check_pretrained(init)  # the parent's files are the ones its manifest lists
    if separate:  # a word that is not one token is named before anything is written
        word_rows(WordEmbedder(AutoTokenizer.from_pretrained(init / "world_lm")), separate)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(init / "vision_tower", out / "vision_tower", dirs_exist_ok=True)
    moved = f"; the rows of {', '.join(separate)} moved apart first" if separate else ""
    say(f"world-LM of {init}, {sizes['lm_steps']} more steps of {sizes['lm_row_tokens']} tokens on the focus "
        f"mixture ({', '.join(focus)} twice as often{moved}) → {out / 'world_lm'}")
    lm = pretrain_world_lm(out / "world_lm", init / "world_lm", TEXT, seed=seed, steps=sizes["lm_steps"],
                           row_tokens=sizes["lm_row_tokens"], lr=FOCUS_LR, eval_every=max(1, sizes["lm_steps"] // 8),
                           heldout=sizes["heldout"], init=init / "world_lm", mix=mix, separate=separate,
                           log=say)
    return write_manifest(out, command, seed, start, sizes, lm, parent["vision_tower"],
                          parent={k: parent[k] for k in ("command", "commit", "seconds", "sizes", "world_lm", "parent")
                                  if k in parent})  # the parent's own parent too: the whole chain of commands


def check_pretrained(root: Path = PRETRAINED) -> dict[str, Any]:
    """The shipped parts' manifest, after checking every file's sha256 (a mismatch names the file)."""
    manifest_file = root / MANIFEST
    if not manifest_file.is_file():
        raise FileNotFoundError(f"{manifest_file} missing: the demo's pretrained parts are not installed; "
                                "make them with `llava15 demo pretrain --out DIR`")
    manifest = json.loads(manifest_file.read_text())
    for rel, digest in manifest["files"].items():
        path = root / rel
        if not path.is_file() or sha256(path) != digest:
            raise ValueError(f"{path}: missing or changed (sha256 differs from {manifest_file}); reinstall "
                             "llava15 or rebuild the parts with `llava15 demo pretrain`")
    return manifest


def _names(args: argparse.Namespace, option: str) -> tuple[str, ...]:
    """A comma-separated option's names (empty when the option is not given)."""
    return tuple(name for name in (getattr(args, option, None) or "").split(",") if name)


def run_pretrain(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    sizes = dict(SMOKE if getattr(args, "smoke", False) else FULL)
    init = Path(args.init).resolve() if getattr(args, "init", None) else None
    if init is not None and not getattr(args, "smoke", False):
        sizes["lm_steps"] = FOCUS_STEPS
    if getattr(args, "steps", None):
        sizes["lm_steps"] = int(args.steps)
    command = shlex.join(["llava15", "demo", "pretrain", *sys.argv[sys.argv.index("pretrain") + 1:]]) \
        if "pretrain" in sys.argv else f"llava15 demo pretrain --out {out} --seed {args.seed}"
    if init is not None and init == out:
        raise ValueError(f"--init {init}: continue into another folder (--out), the parent stays as its manifest lists it")
    focus, separate = _names(args, "focus"), _names(args, "separate")
    if focus and init is None:
        raise ValueError("--focus weights the continuation's drills: it needs --init DIR")
    if separate and init is None:
        raise ValueError("--separate moves a trained world-LM's word rows apart: it needs --init DIR")
    manifest = continue_pretrain(out, init, args.seed, sizes, command, focus, separate) if init is not None else \
        pretrain(out, args.seed, sizes, command)
    say(f"done in {manifest['seconds']:.0f}s; world-LM held-out {manifest['world_lm']['heldout']}; "
        f"manifest {out / MANIFEST}")
    return 0
