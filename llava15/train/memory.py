"""Memory projection of a training run, printed with its formula (`llava15 train RECIPE --dry-run`).

Contract: `memory_report(cfg, world_size, disk_gbs=DISK_GBS) -> str` projects, for the recipe's real
shapes (`model.llm` / `model.vision_tower`: Vicuna-7B/13B and CLIP ViT-L/14-336 by name, or any local
folder's `config.json`), GPU memory per rank, host memory per node, checkpoint sizes and the time of
each save. `project(cfg, world_size, ...) -> Projection` gives the numbers. Unknown shapes give a
report that says so. The model of memory is llava15's trainer (`train.precision`):

- One process: frozen weights stored in bf16 when the run computes in bf16 (fp32 otherwise), the LLM's
  linear layers in NF4 (4 bits + one 8-bit scale per 64 weights + one fp32 scale per 256 of those:
  4.127 bits) or int8 (+ one fp32 scale per row) under `model.quantize`; trained weights (projector,
  LoRA, or the LLM) in fp32 with fp32 gradients and AdamW's two fp32 moments: 16 bytes each.
- N processes (FSDP2): every weight, gradient and optimizer state sharded over N in the weights' dtype
  (`model.dtype`, fp32 for `auto`), plus the bf16 working copy of two decoder layers (the one computing
  and the one prefetched).
- Activations per micro-batch of m samples at the recipe's `model_max_length` L (the worst case: every
  sample full; packing makes one row of m·L tokens), bf16, per token and decoder layer
  16·d + 8·F bytes (layer and norm inputs, q/k/v, attention output: 8 vectors of d; gate, up, SiLU and
  their product: 4 of F; sdpa keeps no L x L matrix). With activation checkpointing only each layer's
  input (2·d bytes per token and layer) stays, plus one layer's activations while it is recomputed.
  Logits at supervised positions only (`train.loss`): fp32 logits + their gradient for at most the
  text tokens (L - image tokens per sample). Frozen vision tower: its output, and one layer's
  activations while it runs. Plus `CUDA_OVERHEAD_GIB` for the CUDA context, kernels' workspaces and
  allocator slack (an assumption, not a measurement).
- Host: each process builds the whole model on the CPU before placing it (in `model.dtype`), so a node
  holds ranks-per-node copies at load; a save gathers the trained weights and optimizer state on rank 0.
- Checkpoints: the resumable state (trained weights 4 bytes + AdamW 8 bytes per trained parameter) and
  `final/` (every weight in fp32 as trained; LoRA runs also write adapter/ and, when assembled from a
  tower and an LLM, base/); time = size / `disk_gbs` (assumed 1 GB/s sustained write unless given).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llava15.config import RecipeConfig

GIB = 2**30
GB = 1e9
DISK_GBS = 1.0  # assumed sustained checkpoint write bandwidth, GB/s
CUDA_OVERHEAD_GIB = 1.0
NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)  # weights, 8-bit block scales, fp32 scales of the scales
CHECKPOINTED_LAYERS_LIVE = 2  # FSDP2: the layer computing and the one prefetched


@dataclass(frozen=True)
class LlmShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int


@dataclass(frozen=True)
class VisionShape:
    hidden: int
    layers: int
    intermediate: int
    image_size: int
    patch_size: int


# spec/training.md §9 and perf_anchors.md §2.1; vocabulary padded to 32064 after adding <image>, as llava-hf
KNOWN_LLMS = {"vicuna-7b": LlmShape(4096, 32, 32, 32, 11008, 32064),
              "vicuna-13b": LlmShape(5120, 40, 40, 40, 13824, 32064)}
KNOWN_TOWERS = {"clip-vit-large-patch14-336": VisionShape(1024, 24, 4096, 336, 14)}


def _config_json(source: str | None) -> dict | None:
    if source and (Path(source) / "config.json").is_file():
        return json.loads((Path(source) / "config.json").read_text())
    return None


def llm_shape(cfg: RecipeConfig) -> LlmShape:
    c = _config_json(cfg.model.init_checkpoint) or _config_json(cfg.model.llm)
    if c is not None:
        c = c.get("text_config", c)
        return LlmShape(c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                        c.get("num_key_value_heads", c["num_attention_heads"]), c["intermediate_size"],
                        c["vocab_size"])
    name = (cfg.model.init_checkpoint or cfg.model.llm).lower()
    for key, shape in KNOWN_LLMS.items():
        if key.split("-")[-1] in name and ("vicuna" in name or "llava" in name):
            return shape
    raise ValueError(f"no shapes known for model.llm={cfg.model.llm!r} (known: {', '.join(KNOWN_LLMS)}, or a "
                     "local folder with config.json)")


def vision_shape(cfg: RecipeConfig) -> VisionShape:
    c = _config_json(cfg.model.init_checkpoint) or _config_json(cfg.model.vision_tower)
    if c is not None:
        c = c.get("vision_config", c)
        return VisionShape(c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"], c["image_size"],
                           c["patch_size"])
    for key, shape in KNOWN_TOWERS.items():
        if key in cfg.model.vision_tower.lower():
            return shape
    raise ValueError(f"no shapes known for model.vision_tower={cfg.model.vision_tower!r} (known: "
                     f"{', '.join(KNOWN_TOWERS)}, or a local folder with config.json)")


@dataclass
class Projection:
    """Bytes per rank on the GPU (by part), host bytes per node, checkpoint bytes; and the formulas."""

    gpu: dict[str, float]
    host: dict[str, float]
    checkpoint: dict[str, float]
    formulas: dict[str, str]
    trained_params: int
    total_params: int

    @property
    def gpu_total(self) -> float:
        return sum(self.gpu.values())


def project(cfg: RecipeConfig, world_size: int = 1, micro_batch: int | None = None,
            checkpointing: bool | None = None, ranks_per_node: int | None = None) -> Projection:
    """The numbers behind `memory_report` (module docstring)."""
    t, v = llm_shape(cfg), vision_shape(cfg)
    n = max(1, world_size)
    m = micro_batch or cfg.train.micro_batch_size
    every = cfg.train.checkpoint_every(on_gpu=True) if checkpointing is None else int(checkpointing)
    d, f, layers = t.hidden, t.intermediate, t.layers
    kv = t.kv_heads * (d // t.heads)
    linear = layers * (2 * d * d + 2 * d * kv + 3 * d * f)  # q, o; k, v; gate, up, down
    rows = layers * (2 * d + 2 * kv + 2 * f + d)  # output rows of those layers (int8 scales)
    other_llm = 2 * t.vocab * d + layers * 2 * d + d  # embeddings, lm_head, norms
    vision = v.layers * (4 * v.hidden ** 2 + 2 * v.hidden * v.intermediate + 9 * v.hidden + v.intermediate) + \
        3 * v.patch_size ** 2 * v.hidden + ((v.image_size // v.patch_size) ** 2 + 2) * v.hidden
    projector = v.hidden * d + d * d + 2 * d if cfg.model.projector == "mlp2x_gelu" else v.hidden * d + d
    lora = cfg.lora.r * layers * (2 * (d + d) + 2 * (d + kv) + 3 * (d + f)) if cfg.lora.enabled else 0
    stage = cfg.train.stage
    trained = projector + lora + (linear + other_llm if stage in ("projector+llm", "all") else 0) + \
        (vision if stage == "all" else 0)
    total = linear + other_llm + vision + projector + lora
    frozen = total - trained
    gpu_bf16 = cfg.train.precision in ("auto", "bf16")  # on GPU `auto` is bf16
    frozen_bytes = 2 if gpu_bf16 else 4
    weights_dtype_bytes = 4 if cfg.model.dtype in ("auto", "float32") else 2
    q = cfg.model.quantize
    gpu: dict[str, float] = {}
    formulas: dict[str, str] = {}
    if n == 1:
        q_linear = linear * NF4_BITS / 8 if q == "nf4" else linear + 4 * rows if q == "int8" else None
        if q_linear is not None:
            gpu[f"frozen LLM linears ({q})"] = q_linear
            formulas[f"frozen LLM linears ({q})"] = (f"{linear / 1e9:.3f}e9 x {NF4_BITS:.3f}/8 B" if q == "nf4"
                                                     else f"{linear / 1e9:.3f}e9 x 1 B + 4 B x {rows} rows")
            gpu["other frozen weights"] = (frozen - linear) * frozen_bytes
            formulas["other frozen weights"] = f"{(frozen - linear) / 1e9:.3f}e9 x {frozen_bytes} B"
        else:
            gpu["frozen weights"] = frozen * frozen_bytes
            formulas["frozen weights"] = f"{frozen / 1e9:.3f}e9 x {frozen_bytes} B"
        gpu["trained weights + grads + AdamW (fp32)"] = trained * 16
        formulas["trained weights + grads + AdamW (fp32)"] = f"{trained / 1e6:.1f}e6 x (4 + 4 + 8) B"
    else:
        gpu["weights (sharded)"] = total * weights_dtype_bytes / n
        formulas["weights (sharded)"] = f"{total / 1e9:.3f}e9 x {weights_dtype_bytes} B / {n}"
        gpu["grads + AdamW (sharded, fp32)"] = trained * 12 / n
        formulas["grads + AdamW (sharded, fp32)"] = f"{trained / 1e9:.3f}e9 x (4 + 8) B / {n}"
        per_layer = (linear + layers * 2 * d) / layers
        gpu["gathered bf16 layers"] = CHECKPOINTED_LAYERS_LIVE * per_layer * 2
        formulas["gathered bf16 layers"] = f"{CHECKPOINTED_LAYERS_LIVE} x {per_layer / 1e6:.0f}e6 x 2 B"
    n_img = (v.image_size // v.patch_size) ** 2
    tokens = m * cfg.data.model_max_length
    per_token_layer = 16 * d + 8 * f
    if every == 1:
        gpu["activations (checkpointed)"] = layers * tokens * 2 * d + tokens * per_token_layer
        formulas["activations (checkpointed)"] = (f"{layers} layers x {tokens} tok x 2*{d} B + one layer "
                                                  f"{tokens} tok x (16*{d} + 8*{f}) B")
    elif every:
        kept = -(-layers // every)  # checkpointed layers keep their input only; the others keep everything
        gpu[f"activations (every {every} layers checkpointed)"] = \
            kept * tokens * 2 * d + (layers - kept + 1) * tokens * per_token_layer
        formulas[f"activations (every {every} layers checkpointed)"] = (
            f"{kept} layers x {tokens} tok x 2*{d} B + {layers - kept + 1} layers x {tokens} tok x (16*{d} + 8*{f}) B")
    else:
        gpu["activations"] = layers * tokens * per_token_layer
        formulas["activations"] = f"{layers} layers x {tokens} tok x (16*{d} + 8*{f}) B"
    text = m * max(cfg.data.model_max_length - n_img, 0)
    gpu["supervised logits + grad (fp32)"] = text * t.vocab * 4 * 2
    formulas["supervised logits + grad (fp32)"] = f"{text} text tok x {t.vocab} x 4 B x 2"
    gpu["vision tower activations"] = m * (n_img + 1) * (v.hidden * 2 + 16 * v.hidden + 8 * v.intermediate)
    formulas["vision tower activations"] = f"{m} img x {n_img + 1} tok x (2 + 16)*{v.hidden} + 8*{v.intermediate} B"
    gpu["CUDA context, workspaces, slack"] = CUDA_OVERHEAD_GIB * GIB
    formulas["CUDA context, workspaces, slack"] = f"{CUDA_OVERHEAD_GIB} GiB (assumed)"
    per_node = ranks_per_node or min(n, 8)
    host = {"load: whole model per rank": per_node * total * weights_dtype_bytes,
            "save: gathered trained weights + AdamW on rank 0": trained * 12,
            "final save: whole model on rank 0 (fp32)": total * 4}
    checkpoint = {"resumable state (trained weights + AdamW)": trained * 12, "final/ (fp32)": (total - lora) * 4}
    if cfg.lora.enabled:
        checkpoint["adapter/ (LoRA + projector, fp32)"] = (lora + projector) * 4
        if not cfg.model.init_checkpoint:
            checkpoint["base/ (once, model dtype)"] = (total - lora) * weights_dtype_bytes
    return Projection(gpu, host, checkpoint, formulas, trained, total)


def memory_report(cfg: RecipeConfig, world_size: int = 1, disk_gbs: float = DISK_GBS) -> str:
    """The projection as text, one line per term with its formula (module docstring)."""
    try:
        p = project(cfg, world_size)
    except (ValueError, KeyError) as exc:
        return f"memory projection: not available: {exc}"
    m, every = cfg.train.micro_batch_size, cfg.train.checkpoint_every(on_gpu=True)
    lines = [f"memory projection per GPU ({world_size} GPU(s), micro-batch {m} x {cfg.data.model_max_length} "
             f"tokens, activation checkpointing {cfg.train.checkpointing_phrase(every)}, model.quantize={cfg.model.quantize}; "
             f"{p.total_params / 1e9:.2f}e9 parameters, {p.trained_params / 1e6:.1f}e6 trained):"]
    lines += [f"  {k:<48} {v / GIB:8.2f} GiB   = {p.formulas[k]}" for k, v in p.gpu.items()]
    lines.append(f"  {'total':<48} {p.gpu_total / GIB:8.2f} GiB")
    lines.append("host memory per node:")
    lines += [f"  {k:<48} {v / GIB:8.2f} GiB" for k, v in p.host.items()]
    lines.append(f"checkpoints (write time at an assumed {disk_gbs:g} GB/s):")
    lines += [f"  {k:<48} {v / GIB:8.2f} GiB  {v / GB / disk_gbs:7.1f} s" for k, v in p.checkpoint.items()]
    return "\n".join(lines)
