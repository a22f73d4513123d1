"""The generation engine: the only path from conversations + images to text (chat, server, eval).

Contract:
- `Engine(bundle, template=None)`; `engine.generate(conversations, images=None, **decoding) -> list[str]`
  and `engine.stream(...) -> Iterator[Event]` (text deltas per row, then one finished event per row).
  A conversation is a `Conversation`, a list of `Message`s or `{"role", "content"}` dicts, or a string
  (one user turn). Trailing assistant turns are dropped (eval records carry their answers). `images`
  gives, per conversation, the images for its `<image>` markers in order (PIL images of any size and
  mode, or paths); without it a `Conversation`'s own `images` are used (relative to `image_root`).
  Within one `generate`/`stream`/`run` call each unique image (one object, or one path) is
  preprocessed once and goes through the vision tower + projector once (`image_features`); its
  features fill the placeholders of every row that uses it (transformers' `mm_encoder_outputs`).
  Decoding keywords: see `DecodingParams.from_kwargs` (max_new_tokens/max_tokens, temperature, top_p,
  stop, response_format, seed, ignore_eos).
- Prompt ids come from `encode_prompt` with the checkpoint's own template (the original
  `tokenizer_image_token` ids); each image id is expanded to `num_image_tokens` ids at the model input
  (`prompt_ids`). Rows are left padded; the KV cache is a preallocated `StaticCache` and the attention
  mask is built once as a 4-D tensor and updated in place, so no step allocates per-token buffers or
  rebuilds masks. Prefill computes only the last position's logits. Each row keeps its own decoding
  settings, stop strings/ids, seeded generator and JSON constraint, so batched greedy output equals
  batch-of-one output. `cuda_graphs=True` replays each decode step as one CUDA graph (GPU only) and
  keeps the last decode step (cache and graph) for the next run of the same batch size and length.
  `compile_decode=True` runs the decode step's language model through `torch.compile` (one compiled
  graph per batch size and cache length, cache lengths rounded up to `COMPILE_CACHE_BUCKET` slots; the
  first run of each shape pays the compilation, ~20-30 s for bench-small on a 2-core CPU) and keeps the
  last decode step like `cuda_graphs`; same tokens up to float rounding.
  `lookahead` (default: on CUDA) lets an all-greedy batch launch step n+1 from the on-device argmax
  before the host reads token n (same tokens). Decode steps: `decode_step.py`; per-row state: `rows.py`.
- `load_generation_bundle(path_or_id, quantize=None, fast_decode=None, **kw)` -> `GenerationBundle` (a
  `LlavaBundle` with `.generate` and `.stream` bound to one lazily built `Engine`). `quantize`
  (`int8`, `fp8`, `nf4`) stores the language model's linear layers quantized, weights only
  (`model.quantize.quantize_for_inference`; vision tower, projector and lm_head untouched).
  `fast_decode` (default: on CUDA) builds that engine with the compiled decode step replayed as CUDA
  graphs (`fast_decode_options`), the decode path chat, serve and eval use; False keeps it eager.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from llava15.data.collate import expand_image_tokens
from llava15.data.conversation import IMAGE_TOKEN, Conversation, Message
from llava15.data.images import load_image, preprocess_with
from llava15.data.templates import get_template
from llava15.data.tokenization import encode_prompt, stop_token_ids
from llava15.infer.decode_step import DecodeStep, StepPool
from llava15.infer.decoding import DecodingParams, TextStream, byte_piece_ids, make_generator, select_tokens
from llava15.infer.json_constraint import JsonConstraint, TokenTable
from llava15.infer.lm_head import DecodeHead
from llava15.infer.rows import Event, RowState
from llava15.model.load import LlavaBundle, load_bundle

log = logging.getLogger(__name__)

ConversationLike = Conversation | Sequence[Message | dict] | str


class GenerationError(ValueError):
    """An input the engine cannot run (names the conversation index and what disagrees)."""


@dataclass
class Prepared:
    """One row ready for the model: expanded prompt ids and its images' pixels."""

    ids: list[int]
    pixel_values: torch.Tensor | None  # [n_images, 3, S, S]
    image_keys: tuple[Any, ...] | None = None  # per image; equal keys = one image, encoded once
    # The keyed image objects, kept alive so that no other image can take their `id` while this row
    # may still share a batch (the server prepares requests one by one and batches them later).
    sources: tuple[Any, ...] = field(default=(), repr=False)


def to_messages(conv: ConversationLike) -> list[Message]:
    if isinstance(conv, str):
        return [Message("user", conv)]
    if isinstance(conv, Conversation):
        messages = list(conv.messages)
    else:
        messages = [m if isinstance(m, Message) else Message(m["role"], m["content"]) for m in conv]
    while messages and messages[-1].role == "assistant":
        messages.pop()
    return messages


COMPILE_CACHE_BUCKET = 256


class Engine:
    def __init__(self, bundle: LlavaBundle, template: str | None = None, cuda_graphs: bool = False,
                 lookahead: bool | None = None, compile_decode: bool = False) -> None:
        self.bundle = bundle
        self.cuda_graphs = cuda_graphs
        self.compile_decode = compile_decode
        self.lookahead = lookahead  # None: on CUDA only (on CPU the extra step after a stop is pure cost)
        self.model = bundle.model
        self.tokenizer = bundle.tokenizer
        self.template = get_template(template or bundle.template, tokenizer=self.tokenizer)
        self.stop_ids = set(stop_token_ids(self.tokenizer, self.template))
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._token_table: TokenTable | None = None
        self._byte_ids: frozenset[int] | None = None  # built once: a vocabulary scan per row costs ms
        if self.model is not None:
            param = next(self.model.parameters())
            self.device, self.dtype = param.device, param.dtype
            impl = getattr(self.model.config.get_text_config(), "_attn_implementation", "sdpa")
            self._bool_mask = impl != "eager"
            # transformers renamed `past_key_values` to `cache` (5.24); pass whichever this version takes
            names = inspect.signature(self.model.forward).parameters
            self._cache_kw = "cache" if "cache" in names else "past_key_values"
            self._lm = self.model.model.language_model
            self._head = DecodeHead(self.model.lm_head)
            self._steps = StepPool(self)

    # ------------------------------------------------------------------------------ preparing
    def prompt_ids(self, messages: list[Message]) -> list[int]:
        """Model-input ids: the original inference ids with each image id expanded."""
        ids = encode_prompt(messages, self.tokenizer, self.template, self.bundle.image_token_id)
        return expand_image_tokens(ids, None, self.bundle.image_token_id, self.bundle.num_image_tokens)[0].tolist()

    def prepare(self, conv: ConversationLike, images: Sequence[Any] | None = None, index: int = 0,
                image_root: str | Path | None = None, pixel_cache: dict[Any, torch.Tensor] | None = None
                ) -> Prepared:
        """One row; `pixel_cache` (key -> preprocessed image) shares preprocessing across the rows of a call."""
        messages = to_messages(conv)
        if not messages or messages[-1].role != "user":
            raise GenerationError(f"conversation {index}: the last message must be from the user "
                                  f"(got {[m.role for m in messages]})")
        if images is None:
            images = conv.images if isinstance(conv, Conversation) else []
        markers = sum(m.content.count(IMAGE_TOKEN) for m in messages)
        if markers != len(images):
            raise GenerationError(f"conversation {index}: {markers} {IMAGE_TOKEN} marker(s) but "
                                  f"{len(images)} image(s)")
        if not images:
            return Prepared(self.prompt_ids(messages), None)
        s = self.bundle.image
        cache = {} if pixel_cache is None else pixel_cache
        keys, tensors = [], []
        for img in images:
            if isinstance(img, str | Path):
                img = Path(image_root) / img if image_root is not None else Path(img)
                key: tuple[str, Any] = ("path", str(img))
            else:  # the eval runner passes one image object to every question about it
                key = ("object", id(img))
            if key not in cache:
                cache[key] = preprocess_with(load_image(img), s)
            keys.append(key)
            tensors.append(cache[key])
        return Prepared(self.prompt_ids(messages), torch.stack(tensors), tuple(keys), tuple(images))

    def _prepare_all(self, conversations, images, image_root) -> list[Prepared]:
        if isinstance(conversations, str | Conversation):
            raise GenerationError("conversations must be a list (one entry per conversation)")
        if images is not None and len(images) != len(conversations):
            raise GenerationError(f"{len(conversations)} conversations but {len(images)} image lists")
        # object ids stay valid as keys: `images` holds every image until the call returns
        pixel_cache: dict[Any, torch.Tensor] = {}
        return [self.prepare(c, None if images is None else images[i], i, image_root, pixel_cache)
                for i, c in enumerate(conversations)]

    # ------------------------------------------------------------------------------ public API
    def generate(self, conversations: Sequence[ConversationLike], images: Sequence[Sequence[Any]] | None = None,
                 image_root: str | Path | None = None, batch_size: int = 16, **decoding: Any) -> list[str]:
        params = DecodingParams.from_kwargs(**decoding)
        prepared = self._prepare_all(conversations, images, image_root)
        texts: list[str] = [""] * len(prepared)
        # Similar lengths together wastes less padding; results go back to the input order.
        order = sorted(range(len(prepared)), key=lambda i: len(prepared[i].ids))
        chunks = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        # An image's features serve every chunk that uses it, and are dropped after its last one.
        last_use = {key: n for n, chunk in enumerate(chunks) for i in chunk for key in prepared[i].image_keys or ()}
        features: dict[Any, torch.Tensor] = {}
        for n, chunk in enumerate(chunks):
            for events in self.run([prepared[i] for i in chunk], [params] * len(chunk), features):
                for ev in events:
                    if ev.finished:
                        texts[chunk[ev.row]] = ev.text or ""
            for key in [k for k in features if last_use.get(k) == n]:
                del features[key]
        return texts

    def stream(self, conversations: Sequence[ConversationLike], images: Sequence[Sequence[Any]] | None = None,
               image_root: str | Path | None = None, **decoding: Any) -> Iterator[Event]:
        params = DecodingParams.from_kwargs(**decoding)
        prepared = self._prepare_all(conversations, images, image_root)
        for events in self.run(prepared, [params] * len(prepared)):
            yield from events

    def token_table(self) -> TokenTable:
        if self._token_table is None:
            self._token_table = TokenTable(self.tokenizer)
        return self._token_table

    # ------------------------------------------------------------------------------ the loop
    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        if self._bool_mask:
            return allowed
        return torch.zeros(allowed.shape, dtype=self.dtype, device=self.device).masked_fill_(
            ~allowed, torch.finfo(self.dtype).min)

    def image_features(self, rows: list[Prepared], store: dict[Any, torch.Tensor] | None = None
                       ) -> list[torch.Tensor] | None:
        """Projected features per image occurrence (row-major, as the model's placeholders are filled).
        Rows' images with equal keys (one object, one path) go through the vision tower once; `store`
        (key -> features) carries them across calls."""
        store = {} if store is None else store
        keys: list[Any] = []
        todo: dict[Any, torch.Tensor] = {}
        for r in rows:
            for j in range(0 if r.pixel_values is None else len(r.pixel_values)):
                key = r.image_keys[j] if r.image_keys is not None else ("row", id(r), j)
                keys.append(key)
                if key not in store and key not in todo:
                    todo[key] = r.pixel_values[j]
        if not keys:
            return None
        if todo:
            pixels = torch.stack(list(todo.values())).to(self.device, self.dtype)
            store.update(zip(todo, self.model.model.get_image_features(pixel_values=pixels).pooler_output))
        return [store[k] for k in keys]

    @torch.inference_mode()
    def run(self, rows: list[Prepared], params: list[DecodingParams],
            image_store: dict[Any, torch.Tensor] | None = None) -> Iterator[list[Event]]:
        """Generate for one batch; yields, after each step, the events of that step. Each unique image
        is encoded once (`image_features`; `image_store` shares features across calls)."""
        b = len(rows)
        lengths = [len(r.ids) for r in rows]
        width = max(lengths)
        total = width + max(p.max_new_tokens for p in params)
        if self.compile_decode:  # fewer cache lengths, fewer compiled graphs; the extra slots stay masked
            total = -(-total // COMPILE_CACHE_BUCKET) * COMPILE_CACHE_BUCKET
        dev = self.device
        ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        valid = torch.zeros((b, total), dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, width - lengths[i]:] = torch.tensor(r.ids)
            valid[i, width - lengths[i]:width] = True
        positions = (valid[:, :width].long().cumsum(-1) - 1).clamp(min=0)
        ids, valid, positions = ids.to(dev), valid.to(dev), positions.to(dev)
        # Prefill mask [B,1,W,T]: causal over real tokens; every position sees itself, so padded
        # query rows stay finite (a fully masked row would give NaN keys/values to later layers).
        cols = torch.arange(total, device=dev)
        q = torch.arange(width, device=dev)
        prefill = (cols[None, :] <= q[:, None])[None] & valid[:, None, :]
        prefill[:, q, q] = True
        feats = self.image_features(rows, image_store)
        # transformers' own path for precomputed (post-projector) features: it checks the counts and
        # fills the image placeholders with masked_scatter, as it does for pixel_values.
        encoded = None if feats is None else {"image": BaseModelOutputWithPooling(pooler_output=feats)}
        with self._steps.take(b, total) as decode:
            decode.start(valid, positions[:, -1:] + 1, width)
            out = self.model(input_ids=ids, mm_encoder_outputs=encoded, attention_mask=self._mask(prefill[:, None]),
                             position_ids=positions, use_cache=True, logits_to_keep=1,
                             **{self._cache_kw: decode.cache})
            yield from self._decode(decode, out.logits[:, -1, :], params, lengths, total - width)

    def _decode(self, decode: DecodeStep, logits: torch.Tensor, params: list[DecodingParams], lengths: list[int],
                steps: int) -> Iterator[list[Event]]:
        dev = logits.device
        if self._byte_ids is None:
            self._byte_ids = byte_piece_ids(self.tokenizer)
        states = [RowState(i, p, lengths[i], TextStream(self.tokenizer, (*self.template.stop_strings, *p.stop),
                                                        self._byte_ids),
                           JsonConstraint(self.token_table(), p.max_new_tokens) if p.json else None,
                           make_generator(p.seed, dev), self.stop_ids) for i, p in enumerate(params)]
        gens = [r.generator for r in states]
        # All-greedy batches need only the argmax: the step then returns tokens (see DecodeStep.greedy),
        # and with `lookahead` launches the next step from the on-device argmax before the host has
        # read this step's tokens (DecodeStep.greedy_ahead); a row that stops meanwhile drops its extra token.
        greedy = all(p.greedy and not p.json for p in params)
        ahead = greedy and (dev.type == "cuda" if self.lookahead is None else self.lookahead)
        for step in range(steps):
            if ahead:
                chosen, following = decode.greedy_ahead(logits, launch=step + 1 < steps)
            elif step == 0 or not greedy:
                chosen = select_tokens(logits, params, gens)
            events = []
            for r in states:
                if r.done:
                    chosen[r.index] = self.pad_id
                else:
                    events.append(r.advance(chosen, logits))
            yield events
            if all(r.done for r in states):
                return
            if ahead:
                logits = following
            elif greedy:
                chosen = decode.greedy(torch.tensor(chosen, dtype=torch.long, device=dev)[:, None])
            else:
                logits = decode(torch.tensor(chosen, dtype=torch.long, device=dev)[:, None])


def fast_decode_options(device: torch.device | str, enabled: bool | None = None) -> dict[str, bool]:
    """`Engine` keywords of the default decode path: on CUDA (unless `enabled` is False) the decode step is
    compiled and each step replayed as one CUDA graph; elsewhere (or `enabled=False`) plain eager steps.
    Batch-1 decode of a 7B model is bound by launching hundreds of kernels per token without them."""
    on = torch.device(device).type == "cuda" if enabled is None else bool(enabled)
    on = on and torch.device(device).type == "cuda"
    return {"cuda_graphs": on, "compile_decode": on}


class GenerationBundle(LlavaBundle):
    """A `LlavaBundle` that can generate: `bundle.generate(conversations, images, **decoding)`."""

    _engine: Engine | None = None
    decode_options: dict[str, bool] | None = None  # Engine keywords (`fast_decode_options`)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(self, **(self.decode_options or {}))
        return self._engine

    def generate(self, conversations: Sequence[ConversationLike], images: Sequence[Sequence[Any]] | None = None,
                 **decoding: Any) -> list[str]:
        return self.engine.generate(conversations, images, **decoding)

    def stream(self, conversations: Sequence[ConversationLike], images: Sequence[Sequence[Any]] | None = None,
               **decoding: Any) -> Iterator[Event]:
        return self.engine.stream(conversations, images, **decoding)


def load_generation_bundle(path_or_id: str | Path, quantize: str | None = None, fast_decode: bool | None = None,
                           **kw: Any) -> GenerationBundle:
    """`load_bundle` (kw: dtype, device) returning a bundle with `.generate`; the device defaults to
    CUDA when available. `quantize`: int8 | fp8 | nf4 weight-only LLM layers; `fast_decode`: see the
    module docstring."""
    if kw.get("device") is None:
        kw["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    b = load_bundle(path_or_id, **kw)
    if quantize not in (None, "none"):
        from llava15.model.quantize import quantize_for_inference

        log.info("%s", quantize_for_inference(b.model, quantize).describe())
    bundle = GenerationBundle(model=b.model, tokenizer=b.tokenizer, template=b.template, image=b.image,
                              image_token_id=b.image_token_id, num_image_tokens=b.num_image_tokens, meta=b.meta)
    bundle.decode_options = fast_decode_options(kw["device"], fast_decode)
    return bundle
