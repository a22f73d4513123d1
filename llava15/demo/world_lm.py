"""The demo's Vicuna: a small Llama pretrained on the synthetic world's text and symbolic scenes.

The paper's stage 2 starts from a pretrained LLM that already retrieves from its context; a
from-scratch LM trained on pixels for a few CPU minutes does not learn that lookup. So the demo's LM
is pretrained offline (`llava15 demo pretrain`), never on pixels: every example is a record of the world
(stage-1 captions with the `plain` template, stage-2 mixture records and text-only conversations with
`vicuna_v1`, tokenized by the training code's own `encode_conversation`), and where the record's image
stands the LM reads a symbolic scene (`demo.symbolic`): one embedding per patch built from its own
word embeddings. Scenes come from the world's sampler without rendered words (the vision tower is not
trained to read them). Examples are packed into rows in stream order, so every row mixes the kinds
(`model.packed_attention` keeps them apart), and the loss is taken on supervised positions only, as the
trainer does.

`pretrain_world_lm(out, tokenizer_dir, ...)` trains and saves an HF `LlamaForCausalLM` folder with that
tokenizer; `heldout_accuracy(model, tokenizer, ...)` scores exact-match short answers per question
kind on held-out symbolic scenes, in the evaluation's own prompt format (greedy, teacher forced: the
answer's tokens and the end of turn must all be the argmax).
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from llava15.data.collate import expand_image_tokens
from llava15.data.conversation import IGNORE_INDEX
from llava15.data.formats import record_to_conversation
from llava15.data.tokenization import encode_conversation
from llava15.demo.symbolic import WordEmbedder, patch_words, separate_word_rows
from llava15.demo.world import records
from llava15.demo.world import text as T
from llava15.demo.world.scenes import Scene, sample_scene

IMAGE_SIZE, PATCH = 96, 32  # the demo tower's geometry: one patch per grid cell
NO_WORDS = (1.0, 0.0, 0.0)  # symbolic scenes carry no rendered words (the tower does not read them)


@dataclass(frozen=True)
class Mixture:
    """What the example stream holds: shares of captions and text-only conversations, and of the mixture
    examples a share of drills (several short questions that each find one object by one of its words and
    read another; one scene asked about different objects is the contrast that makes the LM look the
    object up instead of guessing the most likely answer). The rest is the merged VQA record (the lookup
    in its densest form), sometimes with one other record of the scene."""

    stream: str = "train"  # the scenes' random stream; only "train" starts with the object curriculum
    p_caption: float = 0.2
    p_text: float = 0.05
    p_drill: float = 0.5
    drill_kinds: tuple[str, ...] = ("color", "shape", "where", "what_at", "size")
    p_vqa_only: float = 0.7
    objects: tuple[int, int] | None = None  # objects per scene; None: the curriculum (train) or 2-5


PRETRAIN = Mixture()
FOCUS_KINDS = ("color", "exists", "shape", "where", "what_at", "size")  # the continuation's drill kinds
FOCUS_DEFAULT = ("color", "exists")


def focus_mixture(kinds: tuple[str, ...] = FOCUS_DEFAULT) -> Mixture:
    """The continuation's mixture (`demo pretrain --init --focus`): fresh 2-5 object scenes, mostly drills,
    the lookups in `kinds` asked twice as often as the others (the default: the two the first phase of
    b3ccd4c bound least; its colour answers named another object's colour, its exists answers said "yes"
    to an absent colour+shape pair)."""
    unknown = [k for k in kinds if k not in FOCUS_KINDS]
    if unknown:
        raise ValueError(f"--focus {','.join(unknown)}: not a drill kind; the kinds are {', '.join(FOCUS_KINDS)}")
    return Mixture(stream="focus", p_caption=0.1, p_text=0.05, p_drill=0.7,
                   drill_kinds=tuple(k for kind in FOCUS_KINDS for k in (kind,) * (2 if kind in kinds else 1)))


# half the distance between two colour words' rows in the world-LM of cdee5a7 (1.56): moved this far
# apart, "large" and "small" were read from 2-5 object scenes within 125 steps (held-out size 0.64 -> 0.94)
SEPARATE_RADIUS = 0.75

VQA_KINDS = ("color", "shape", "count", "exists", "where", "what_at", "size", "background")


# Objects per training scene by example index (about 36 examples a step): one object first (reading the
# scene needs no binding), then one or two, two or three, then the world's own 2-5. On colour questions
# alone this took a 2-object run from chance to 0.70 in 2000 steps of 32 examples; started at 2-5 objects
# the reading never began. With one or two objects only until example 18000 (step 500), the lookup keyed
# on the shape word never formed in 5000 steps (held-out colour 0.55, chance among the scene's objects);
# with these phases it formed by step 3750 (colour 1.00), but the size lookup did not (0.58).
CURRICULUM = ((6000, (1, 1)), (36000, (1, 2)), (72000, (2, 3)))


def objects_at(stream: str, index: int) -> tuple[int, int]:
    if stream == "train":
        for until, objects in CURRICULUM:
            if index < until:
                return objects
    return (2, 5)


def scene_of(seed: int, stream: str, index: int, objects: tuple[int, int] | None = None
             ) -> tuple[Scene, random.Random]:
    rng = random.Random(f"llava15-world-lm/{seed}/{stream}/{index}")
    scene = sample_scene(rng, f"lm{seed}-{stream}-{index}", "symbolic.png", IMAGE_SIZE, words=NO_WORDS,
                         objects=objects or objects_at(stream, index))
    return scene, rng


def example_records(seed: int, index: int, mix: Mixture = PRETRAIN) -> tuple[Scene | None, list[tuple[dict, str]]]:
    """The records example `index` contributes, each with its template name."""
    scene, rng = scene_of(seed, mix.stream, index, mix.objects)
    draw = rng.random()
    if draw < mix.p_caption:
        return scene, [(records.pretrain_record(scene, rng), "plain")]
    if draw < mix.p_caption + mix.p_text:
        return None, [(records.text_only_record(f"text-{index}", rng), "vicuna_v1")]
    if rng.random() < mix.p_drill:
        qas = T.sample_qas(scene, rng, rng.randint(4, 8), kinds=mix.drill_kinds)
        if qas:  # a scene may answer none of the drill's kinds (colour needs a unique shape)
            drill = records.conversation(f"drill-{index}", scene.image, records.short_answer_turns(qas))
            return scene, [(drill, "vicuna_v1")]
    recs = records.finetune_records(scene, rng)
    # the merged VQA record always (it holds most answers per token), sometimes with one other kind
    if rng.random() < mix.p_vqa_only or len(recs) == 1:
        return scene, [(recs[0], "vicuna_v1")]
    return scene, [(recs[0], "vicuna_v1"), (rng.choice(recs[1:]), "vicuna_v1")]


class SymbolicExamples:
    """Tokenized examples with their symbolic patch words, in a deterministic stream."""

    def __init__(self, tokenizer, seed: int, max_length: int = 512, mix: Mixture = PRETRAIN) -> None:
        self.tok, self.seed, self.max_length, self.mix = tokenizer, seed, max_length, mix
        self.image_id = tokenizer.convert_tokens_to_ids("<image>")
        self.n_patches = (IMAGE_SIZE // PATCH) ** 2

    def encode(self, record: dict, template: str, scene: Scene | None, aspect_ratio: str
               ) -> tuple[torch.Tensor, torch.Tensor, list[list[str]]]:
        conv = record_to_conversation(record, 0, "world-lm")
        enc = encode_conversation(conv, self.tok, template, self.image_id, self.max_length, self.n_patches)
        ids, labels = expand_image_tokens(enc.input_ids, enc.labels, self.image_id, self.n_patches)
        words = patch_words(scene, aspect_ratio, IMAGE_SIZE, PATCH) if scene is not None and conv.images else []
        return ids, labels, words

    def stream(self, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[list[str]]]]:
        for index in itertools.count(start):
            scene, recs = example_records(self.seed, index, self.mix)
            aspect = "square" if index % 2 else "pad"  # stage 1 crops square, stage 2 pads: both
            for record, template in recs:
                yield self.encode(record, template, scene, aspect)


def packed_rows_of(examples: Iterator, row_tokens: int) -> Iterator[list]:
    """Rows of whole examples in stream order (every row a mix of the example kinds), up to `row_tokens`."""
    row, used = [], 0
    for ex in examples:
        if row and used + len(ex[0]) > row_tokens:
            yield row
            row, used = [], 0
        row.append(ex)
        used += len(ex[0])


def packed_batch(examples: list, embedder: WordEmbedder, image_id: int, pad_id: int) -> dict:
    """One packed row (samples attend to themselves only: `model.packed_attention`)."""
    from llava15.data.packing import pack_rows
    from llava15.model.packed_attention import packed_rows

    batch = pack_rows([ex[0] for ex in examples], [ex[1] for ex in examples], [list(range(len(examples)))], pad_id)
    words = [w for ex in examples for w in ex[2]]
    return {"input_ids": batch["input_ids"], "labels": batch["labels"], "position_ids": batch["position_ids"],
            "attention_mask": None, "packed": packed_rows(batch["position_ids"]),
            "symbolic": embedder.index(words) if words else None}


def embed_inputs(lm, batch: dict, image_id: int) -> torch.Tensor:
    """Token embeddings, with the image positions holding the symbolic scene (gradients reach the table)."""
    table = lm.get_input_embeddings().weight
    embeds = table[batch["input_ids"]]
    if batch["symbolic"] is not None:
        tok, patch, weight = batch["symbolic"]
        n = int(patch.max()) + 1
        scene = torch.zeros(n, table.shape[1], dtype=table.dtype).index_add(0, patch, table[tok] * weight[:, None])
        mask = (batch["input_ids"] == image_id)[..., None]
        embeds = embeds.masked_scatter(mask, scene)
    return embeds


def forward_supervised(lm, batch: dict, image_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits at supervised positions, their targets), as the trainer computes the loss."""
    from llava15.model.packed_attention import KWARG

    targets = F.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE_INDEX)
    keep = targets != IGNORE_INDEX
    kw = {"position_ids": batch["position_ids"], KWARG: batch["packed"]} if batch.get("packed") else \
        {"attention_mask": batch["attention_mask"]}
    out = lm(inputs_embeds=embed_inputs(lm, batch, image_id), use_cache=False, logits_to_keep=keep, **kw)
    return out.logits, targets[keep]


def heldout_questions(seed: int, n_scenes: int) -> list[tuple[str, Scene, T.QA]]:
    """One question of every VQA kind per held-out scene, as the synthetic VQAv2 set asks them."""
    out = []
    for i in range(n_scenes):
        scene, rng = scene_of(seed, "heldout", i)
        out += [(qa.kind, scene, qa) for qa in T.sample_qas(scene, rng, len(VQA_KINDS), kinds=VQA_KINDS)]
    return out


@torch.no_grad()
def heldout_accuracy(lm, tokenizer, seed: int, n_scenes: int = 50, row_tokens: int = 4096) -> dict[str, float]:
    """Exact-match accuracy per question kind on held-out symbolic scenes (module docstring)."""
    data = SymbolicExamples(tokenizer, seed)
    embedder = WordEmbedder(tokenizer)
    items = []
    for kind, scene, qa in heldout_questions(seed, n_scenes):
        rec = records.conversation("heldout", scene.image, [(f"{qa.question}\n{T.SHORT_ANSWER}", qa.short)])
        items.append((kind, data.encode(rec, "vicuna_v1", scene, "pad")))
    lm.eval()
    hits: dict[str, list[bool]] = {k: [] for k in VQA_KINDS}
    rows, row, used = [], [], 0
    for item in items:  # packed rows, as in training
        if row and used + len(item[1][0]) > row_tokens:
            rows.append(row)
            row, used = [], 0
        row.append(item)
        used += len(item[1][0])
    rows.append(row)
    for chunk in rows:
        batch = packed_batch([ex for _, ex in chunk], embedder, data.image_id, tokenizer.pad_token_id)
        logits, targets = forward_supervised(lm, batch, data.image_id)
        right = (logits.argmax(-1) == targets).tolist()
        counts = [int((ex[1][1:] != IGNORE_INDEX).sum()) for _, ex in chunk]
        for (kind, _), n in zip(chunk, counts):
            hits[kind].append(all(right[:n]))
            right = right[n:]
    lm.train()
    acc = {k: round(sum(v) / len(v), 4) for k, v in hits.items() if v}
    acc["mean"] = round(sum(acc.values()) / len(acc), 4)
    return acc


def pretrain_world_lm(out: str | Path, tokenizer_dir: str | Path, shape: dict, *, seed: int = 0,
                      steps: int = 3000, row_tokens: int = 4096, lr: float = 2e-3, warmup: int = 100,
                      eval_every: int = 500, threads: int | None = None, heldout: int = 50,
                      init: str | Path | None = None, mix: Mixture = PRETRAIN, separate: tuple[str, ...] = (),
                      log=print) -> dict:
    """Train the world-LM and save it (HF folder + the tokenizer) to `out`; returns the training summary.

    `init`: a saved world-LM folder to continue from (its weights, read in fp32) instead of random weights;
    `separate`: words whose embedding rows are moved `SEPARATE_RADIUS` apart first (`separate_word_rows`).
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from llava15.model.packed_attention import PACKED_SDPA

    if threads:
        torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    if init is not None:
        lm = LlamaForCausalLM.from_pretrained(init, dtype=torch.float32, attn_implementation=PACKED_SDPA)
    else:
        # tied embeddings: a word read from the context leaves through the row it came in by, so the copy
        # from a symbolic patch to the answer needs no second, separately learnt table
        vocab = -(-len(tok) // 64) * 64  # as `model.build` rounds: LLaVA keeps the matrices at this size
        lm = LlamaForCausalLM(LlamaConfig(
            vocab_size=vocab, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id, rms_norm_eps=1e-5, tie_word_embeddings=True,
            attn_implementation=PACKED_SDPA, **shape))
    data = SymbolicExamples(tok, seed, mix=mix)
    embedder = WordEmbedder(tok)
    if separate:
        separate_word_rows(lm.get_input_embeddings().weight, embedder, separate, SEPARATE_RADIUS,
                           torch.Generator().manual_seed(seed))
    opt = torch.optim.AdamW(lm.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, 0.5 * (
        1 + math.cos(math.pi * min(1.0, max(0, s - warmup) / max(1, steps - warmup))))))
    # Rows mix the example kinds: batches sorted by length would each hold one kind (captions are short,
    # conversations long), and a model stepped on one kind at a time swings between them instead of
    # learning to read the scene (held-out caption loss 4-7 after 400 such steps; 0.55 on captions alone).
    stream = packed_rows_of(data.stream(), row_tokens)
    history, start, tokens = [], time.time(), 0
    lm.train()
    for step in range(steps):
        batch = packed_batch(next(stream), embedder, data.image_id, tok.pad_token_id)
        logits, targets = forward_supervised(lm, batch, data.image_id)
        loss = F.cross_entropy(logits.float(), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += batch["input_ids"].numel()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            acc = heldout_accuracy(lm, tok, seed + 1, n_scenes=heldout)
            history.append({"step": step + 1, "tokens": tokens, "loss": round(float(loss), 4),
                            "seconds": round(time.time() - start, 1), "heldout": acc})
            log(f"[world-lm] step {step + 1}/{steps}, {tokens} tokens, {time.time() - start:.0f}s, "
                f"loss {float(loss):.3f}, held-out " + ", ".join(f"{k} {v:.2f}" for k, v in acc.items()))
            summary = {"steps": step + 1, "of_steps": steps, "row_tokens": row_tokens, "lr": lr, "seed": seed,
                       "mixture": mix.stream,
                       "tokens": tokens, "seconds": round(time.time() - start, 1), "heldout": acc,
                       "history": history}
            save_world_lm(lm, tok, Path(out), summary)  # at every evaluation: a long run can be used early
    return summary


def save_world_lm(lm, tok, out: Path, summary: dict) -> None:
    """The LM in bf16 (a copy: training goes on in fp32) with its tokenizer and training summary."""
    import copy

    from transformers import GenerationConfig

    from llava15.model.tokenizer import copy_sentencepiece_model

    out.mkdir(parents=True, exist_ok=True)
    saved = copy.deepcopy(lm).to(torch.bfloat16)
    saved.set_attn_implementation("sdpa")  # what a loaded copy uses; the trainer switches for packing
    saved.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id)
    saved.save_pretrained(out)
    tok.save_pretrained(out)
    copy_sentencepiece_model(tok, out)
    (out / "world_lm.json").write_text(json.dumps(summary, indent=2))
