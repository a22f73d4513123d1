"""Tiny random models in the real on-disk formats, for tests, benchmarks and the demo.

Contract (everything deterministic, seeded; nothing touches the network):
- `make_tiny_tokenizer(dir, vocab_size=384)`: a LLaMA-style SentencePiece tokenizer (Vicuna's config)
  trained on a built-in English corpus that covers the chat templates' words.
- `make_tiny_clip(dir)`: a full two-tower `CLIPModel` like `openai/clip-vit-large-patch14-336`
  (vision: 56 px, patch 14 → 16 patches + CLS, hidden 32, 2 layers), plus its preprocessor config.
- `make_tiny_llama(dir, tokenizer_dir=None)`: a `LlamaForCausalLM` (hidden 64, 2 layers, GQA 4/2 heads)
  with that tokenizer and a generation config, like `lmsys/vicuna-7b-v1.5`.
- `make_tiny_llava(dir, layout="hf"|"original", template="vicuna_v1", projector="mlp2x_gelu") -> Path`:
  assembled through `build_llava` + `save_checkpoint`; the original layout is produced from it by
  `convert.to_original` (vision weights left out, tower referenced by `mm_vision_tower` = the
  `vision_tower/` subfolder, legacy `pytorch_model.bin`), exactly as released LLaVA-1.5 checkpoints.
- `FAMILIES`, `make_tiny_family_tokenizer(dir, family)`, `make_tiny_family_lm(dir, family)`: the
  supported LLM families in miniature (`llama3`, `qwen2`, `mistral`, `phi3`): the family's architecture,
  special tokens, BOS rule and real chat template string; `make_tiny_siglip(dir)`: a SigLIP vision
  tower with SigLIP's image processor config.
- `make_bench_small_llava(dir, tokenizer_dir=None) -> Path`: the "bench-small" shape the CPU
  benchmarks use (CLIP 336/14 hidden 256 ×4, Llama hidden 512 ×4, vocab 32064, image token
  32000). The tokenizer is `tokenizer_dir` (e.g. the spec's Vicuna tokenizer fixture, 32000 pieces);
  without it the tiny tokenizer is used with the same 32064-row matrices (`<image>` is then id 384).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from llava15.config import DEFAULT_TEMPLATE

TINY_SEED = 0
BENCH_SEED = 1234
BENCH_VOCAB = 32064

_SENTENCES = """\
A chat between a curious user and an artificial intelligence assistant.
The assistant gives helpful, detailed, and polite answers to the user's questions.
A chat between a curious human and an artificial intelligence assistant.
The assistant gives helpful, detailed, and polite answers to the human's questions.
USER: What is in the image? ASSISTANT: A red circle on a white background.
USER: What color is the square? ASSISTANT: The square is blue.
USER: How many shapes are there? ASSISTANT: There are 3 shapes: two circles and one triangle.
USER: Is the triangle above the circle? ASSISTANT: Yes, the triangle is above the circle.
USER: Describe the picture in detail. ASSISTANT: The picture shows a small green square in the top left corner.
USER: Answer the question using a single word or phrase. ASSISTANT: Yes
Answer with the option's letter from the given choices directly.
A. red B. green C. blue D. yellow
Render a clear and concise summary of the photo.
a wooden pier stretches into a calm lake with mountains in the background
a large yellow triangle to the right of a small purple circle
two blue squares and one orange circle on a gray background
the quick brown fox jumps over the lazy dog near the river bank
there is a cat sitting on the mat and a dog sleeping under the table
The weather is sunny today, with a light wind from the west and 21 degrees.
She counted 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 apples in the basket.
What is the capital of France? The capital of France is Paris.
Please explain why the sky is blue in simple words.
The image contains several objects: a red ball, a green box and a black pen.
Where is the circle? The circle is in the middle of the image, below the square.
What shape is left of the star? A hexagon is left of the star.
Colors: red, green, blue, yellow, orange, purple, pink, brown, black, white, gray.
Shapes: circle, square, triangle, rectangle, star, hexagon, diamond, ellipse.
Positions: left, right, above, below, top, bottom, center, corner, middle, next to.
Numbers: zero, one, two, three, four, five, six, seven, eight, nine, ten.
"""


def tiny_corpus() -> list[str]:
    """The built-in English corpus (template strings, shapes/colours vocabulary, numbers)."""
    return [line for line in _SENTENCES.splitlines() if line.strip()]


def make_tiny_tokenizer(dir: str | Path, vocab_size: int = 384) -> Path:
    """Train the tiny SentencePiece tokenizer into `dir` (tokenizer.model + HF files)."""
    from llava15.demo.tokenizer import train_sentencepiece_tokenizer

    return train_sentencepiece_tokenizer(tiny_corpus() * 4, dir, vocab_size)


def _clip_vision_kwargs(image_size: int = 56, hidden: int = 32, layers: int = 2, heads: int = 2) -> dict:
    return dict(image_size=image_size, patch_size=14, hidden_size=hidden, num_hidden_layers=layers,
                num_attention_heads=heads, intermediate_size=hidden * 2 if hidden < 256 else hidden * 4,
                projection_dim=hidden, hidden_act="quick_gelu")


def make_tiny_clip(dir: str | Path, image_size: int = 56, seed: int = TINY_SEED, **vision: int) -> Path:
    """A random two-tower CLIPModel folder (vision tower `image_size` px, patch 14)."""
    from transformers import CLIPConfig, CLIPModel

    from llava15.data.images import write_clip_preprocessor_config

    dir = Path(dir)
    torch.manual_seed(seed)
    vcfg = _clip_vision_kwargs(image_size, **vision)
    tcfg = dict(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=16, bos_token_id=0, eos_token_id=2,
                pad_token_id=1, projection_dim=vcfg["projection_dim"])
    model = CLIPModel(CLIPConfig(text_config=tcfg, vision_config=vcfg, projection_dim=vcfg["projection_dim"]))
    model.save_pretrained(dir)
    write_clip_preprocessor_config(dir, image_size)
    return dir


def make_tiny_llama(dir: str | Path, tokenizer_dir: str | Path | None = None, seed: int = TINY_SEED,
                    vocab_size: int | None = None, **shape: int) -> Path:
    """A random LlamaForCausalLM folder with a Vicuna-style tokenizer (trained tiny one by default)."""
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is None:
        make_tiny_tokenizer(dir)
    else:
        for f in Path(tokenizer_dir).iterdir():
            if f.is_file() and (f.name.startswith("tokenizer") or f.name == "special_tokens_map.json"):
                shutil.copyfile(f, dir / f.name)
    tok = AutoTokenizer.from_pretrained(dir)
    if not (dir / "tokenizer.json").exists():
        tok.save_pretrained(dir)
    kw = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=128, max_position_embeddings=1024)
    kw.update(shape)
    cfg = LlamaConfig(vocab_size=vocab_size or len(tok), rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
                      pad_token_id=0, tie_word_embeddings=False, **kw)  # Vicuna: pad_token_id 0
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model.save_pretrained(dir)
    return dir


def make_tiny_llava(dir: str | Path, layout: str = "hf", template: str = DEFAULT_TEMPLATE,
                    projector: str = "mlp2x_gelu", seed: int = TINY_SEED) -> Path:
    """A tiny random LLaVA checkpoint in the llava15/HF layout or the original LLaVA layout."""
    from llava15.model.build import build_llava
    from llava15.model.save import save_checkpoint

    if layout not in ("hf", "original"):
        raise ValueError(f"layout must be 'hf' or 'original', got {layout!r}")
    dir = Path(dir)
    with tempfile.TemporaryDirectory(prefix="llava15-tiny-") as tmp:
        clip = make_tiny_clip(Path(tmp) / "clip", seed=seed)
        llama = make_tiny_llama(Path(tmp) / "llama", seed=seed + 1)
        torch.manual_seed(seed + 2)  # projector init
        model, tok, image = build_llava(str(clip), str(llama), projector=projector)
        if layout == "hf":
            save_checkpoint(model, tok, dir, template=template, image=image)
            return dir
        from llava15.model.convert import to_original

        hf = Path(tmp) / "hf"
        save_checkpoint(model, tok, hf, template=template, image=image)
        dir.mkdir(parents=True, exist_ok=True)
        vision_dir = dir / "vision_tower"
        shutil.copytree(clip, vision_dir, dirs_exist_ok=True)
        to_original(hf, dir, vision_tower_ref=str(vision_dir.resolve()), include_vision_tower=False,
                    safetensors=False)
    return dir


def make_bench_small_llava(dir: str | Path, tokenizer_dir: str | Path | None = None,
                           template: str = DEFAULT_TEMPLATE) -> Path:
    """The bench-small model of the CPU benchmarks (49.3 M parameters), saved as a checkpoint."""
    from llava15.model.build import build_llava
    from llava15.model.save import save_checkpoint

    dir = Path(dir)
    with tempfile.TemporaryDirectory(prefix="llava15-bench-") as tmp:
        clip = make_tiny_clip(Path(tmp) / "clip", image_size=336, seed=BENCH_SEED, hidden=256, layers=4,
                              heads=4)
        llama = make_tiny_llama(Path(tmp) / "llama", tokenizer_dir=tokenizer_dir, seed=BENCH_SEED,
                                vocab_size=32000, hidden_size=512, num_hidden_layers=4,
                                num_attention_heads=8, num_key_value_heads=8, intermediate_size=1376,
                                max_position_embeddings=4096)
        torch.manual_seed(BENCH_SEED)
        model, tok, image = build_llava(str(clip), str(llama))
        if model.config.text_config.vocab_size < BENCH_VOCAB:
            # Tiny tokenizer (no resize happened): pad the matrices to bench-small's 32064 rows anyway.
            model.resize_token_embeddings(BENCH_VOCAB, mean_resizing=False)
        save_checkpoint(model, tok, dir, template=template, image=image)
    return dir


def llava_7b_config(tiny: bool = False):
    """LLaVA-1.5-7B's shape (CLIP-L/336 + Llama-7B, vocab 32064) as a `LlavaConfig`, for random-weight
    GPU benchmarks; `tiny=True` gives a toy model of the same structure for CPU dry runs."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    if tiny:
        vision = CLIPVisionConfig(image_size=28, patch_size=14, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64)
        text = LlamaConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=4, intermediate_size=128, max_position_embeddings=4096)
    else:
        vision = CLIPVisionConfig(image_size=336, patch_size=14, hidden_size=1024, num_hidden_layers=24,
                                  num_attention_heads=16, intermediate_size=4096, projection_dim=768)
        text = LlamaConfig(vocab_size=32064, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                           num_key_value_heads=32, intermediate_size=11008, max_position_embeddings=4096,
                           rms_norm_eps=1e-5)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=text.vocab_size - 64,
                       projector_hidden_act="gelu", vision_feature_layer=-2,
                       vision_feature_select_strategy="default")


# ------------------------------------------------------------------ the supported LLM families and towers
# Each family's tiny LM carries the family's real special tokens and its real chat template string (from
# the released instruct model's tokenizer_config.json), so `apply_chat_template` renders what the
# released model would see, and llava15's template of the same name can be checked against it.

LLAMA3_CHAT_TEMPLATE = (  # Meta-Llama-3-8B-Instruct
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
QWEN2_CHAT_TEMPLATE = (  # Qwen2-7B-Instruct
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
MISTRAL_CHAT_TEMPLATE = (  # Mistral-7B-Instruct-v0.1 (no system role)
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")
PHI3_CHAT_TEMPLATE = (  # Phi-3-mini-4k-instruct
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}")

# family -> llava15 template, architecture, tokenizer kind, chat template, special tokens (bos, eos, pad,
# others). `bpe`: a byte-level BPE trained with the `tokenizers` library (Llama-3, Qwen2); `sentencepiece`:
# LLaMA's SentencePiece tokenizer (Mistral and Phi-3 ship one).
FAMILIES: dict[str, dict] = {
    "llama3": dict(template="llama3", arch="llama", tokenizer="bpe", chat_template=LLAMA3_CHAT_TEMPLATE,
                   bos="<|begin_of_text|>", eos="<|eot_id|>", pad=None,
                   specials=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                             "<|eot_id|>"]),
    "qwen2": dict(template="qwen2", arch="qwen2", tokenizer="bpe", chat_template=QWEN2_CHAT_TEMPLATE,
                  bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                  specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"]),
    "mistral": dict(template="mistral_instruct", arch="mistral", tokenizer="sentencepiece",
                    chat_template=MISTRAL_CHAT_TEMPLATE, bos="<s>", eos="</s>", pad=None, specials=[]),
    "phi3": dict(template="phi3", arch="phi3", tokenizer="sentencepiece", chat_template=PHI3_CHAT_TEMPLATE,
                 bos="<s>", eos="<|endoftext|>", pad="<|endoftext|>",
                 specials=["<|endoftext|>", "<|assistant|>", "<|end|>", "<|system|>", "<|user|>"]),
}


def _family_texts() -> list[str]:
    """The tiny corpus rendered through every family's turn markers, so the BPE merges see them."""
    words = ["system", "user", "assistant", "You are a helpful assistant.", "[INST]", "[/INST]"]
    return tiny_corpus() * 4 + words * 8


def make_tiny_family_tokenizer(dir: str | Path, family: str, vocab_size: int = 512) -> Path:
    """The family's tokenizer in miniature: its special tokens, BOS rule and real chat template."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    spec, dir = FAMILIES[family], Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    if spec["tokenizer"] == "sentencepiece":
        make_tiny_tokenizer(dir)
        tok = AutoTokenizer.from_pretrained(dir)
        if spec["specials"]:
            tok.add_special_tokens({"additional_special_tokens": spec["specials"]})
        tok.eos_token = spec["eos"]
        if spec["pad"]:
            tok.pad_token = spec["pad"]
    else:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        bpe.train_from_iterator(_family_texts(), trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=spec["specials"], show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        bos = spec["bos"]
        bpe.post_processor = (processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                            special_tokens=[(bos, bpe.token_to_id(bos))])
                              if bos else processors.ByteLevel(trim_offsets=False))
        tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=bos, eos_token=spec["eos"],
                                      pad_token=spec["pad"])
    tok.chat_template = spec["chat_template"]
    tok.save_pretrained(dir)
    return dir


def make_tiny_family_lm(dir: str | Path, family: str, seed: int = TINY_SEED) -> Path:
    """A random causal LM of the family's architecture (hidden 64, 2 layers) with its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    dir = Path(dir)
    tok = AutoTokenizer.from_pretrained(make_tiny_family_tokenizer(dir, family))
    spec = FAMILIES[family]
    eos = [tok.convert_tokens_to_ids(spec["eos"])]
    if family == "llama3":
        eos.append(tok.convert_tokens_to_ids("<|end_of_text|>"))
    kw = dict(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=128, max_position_embeddings=1024, bos_token_id=tok.bos_token_id,
              eos_token_id=eos[0], pad_token_id=tok.pad_token_id,
              tie_word_embeddings=family == "qwen2")  # Qwen2's small models tie input and output embeddings
    if family == "mistral":
        kw["sliding_window"] = None  # as Mistral-7B-Instruct-v0.2 and later (v0.1 had a 4096-token window)
    cfg = AutoConfig.for_model(spec["arch"], **kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=eos,
                                               pad_token_id=tok.pad_token_id)
    model.save_pretrained(dir)
    return dir


def make_tiny_siglip(dir: str | Path, image_size: int = 56, seed: int = TINY_SEED) -> Path:
    """A random SigLIP vision tower (patch 14, no CLS token) with SigLIP's image processor config."""
    import json

    from transformers import SiglipVisionConfig, SiglipVisionModel

    dir = Path(dir)
    torch.manual_seed(seed)
    cfg = SiglipVisionConfig(image_size=image_size, patch_size=14, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64)
    SiglipVisionModel(cfg).save_pretrained(dir)
    (dir / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "SiglipImageProcessor", "do_resize": True, "do_rescale": True,
        "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3,
        "rescale_factor": 1 / 255, "size": {"height": image_size, "width": image_size}}, indent=2))
    return dir
