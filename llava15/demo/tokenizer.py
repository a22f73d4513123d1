"""A LLaMA-style SentencePiece tokenizer trained on a text corpus (the demo's world, the test models).

Contract: `train_sentencepiece_tokenizer(texts, out_dir, vocab_size) -> Path` trains a SentencePiece BPE
model with LLaMA's settings (byte fallback, unk=0 / bos=1 `<s>` / eos=2 `</s>`, split digits, dummy
prefix, no normalisation) and writes it as an HF tokenizer folder mirroring Vicuna-v1.5's
(`tokenizer.model`, `tokenizer_config.json` with `LlamaTokenizer`, `legacy: false`, right padding, plus
the `tokenizer.json` transformers derives from it). `AutoTokenizer.from_pretrained(out_dir)` then
behaves like Vicuna's tokenizer: BOS added, `</s>` special, `"</s>USER"` → `</s>`, `USER`.
Same texts, same bytes: sentences come from memory and the model goes to memory.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path

from llava15.model.tokenizer import SP_MODEL_FILE, vicuna_tokenizer_config


def train_sentencepiece_tokenizer(
    texts: Iterable[str], out_dir: str | Path, vocab_size: int, model_max_length: int = 2048
) -> Path:
    """Train a LLaMA-style SentencePiece BPE tokenizer on `texts` and write an HF tokenizer folder."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [t.replace("\n", " ").strip() for t in texts]
    lines = [t for t in lines if t]
    if not lines:
        raise ValueError("train_sentencepiece_tokenizer: no non-empty text to train on")
    min_vocab = 3 + 256  # unk/bos/eos + the 256 byte-fallback pieces
    if vocab_size <= min_vocab:
        raise ValueError(f"vocab_size {vocab_size} must exceed {min_vocab} (3 specials + 256 byte pieces)")
    model = io.BytesIO()
    # LLaMA's trainer settings (read from its tokenizer.model's trainer_spec); the corpus is tiny, so
    # the character-coverage cut is off. Sentences come from memory and the model goes to memory, so
    # no temporary path ends up in the model's trainer_spec: same texts, same bytes.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_surface=" \u2047 ",
        num_threads=1,
        minloglevel=2,
    )
    (out_dir / SP_MODEL_FILE).write_bytes(model.getvalue())
    (out_dir / "tokenizer_config.json").write_text(json.dumps(vicuna_tokenizer_config(model_max_length), indent=2))
    # Derive tokenizer.json once so later loads need neither sentencepiece nor the conversion step.
    tok = AutoTokenizer.from_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
