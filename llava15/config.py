"""Typed recipe configuration: flat dataclasses, loaded from YAML, overridden from the command line.

A recipe is four sections (`model`, `data`, `train`, `lora`). Every field has a docstring under it.
`load_recipe` rejects unknown keys with the dotted path and the nearest valid name, checks types and
the settings that must agree (LoRA), and applies `key.sub=value` overrides (values parsed as YAML
scalars). Malformed YAML and duplicate keys are errors naming the file and line. The resolved recipe is
saved next to every checkpoint (`save_recipe`); `describe_keys()` lists every key with its type,
default and documentation (`llava15 train --list-keys`). This module imports nothing from llava15 and
no heavy dependency.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# LLaVA-1.5's stage-2 template: the default wherever a checkpoint or a command does not name one.
DEFAULT_TEMPLATE = "vicuna_v1"
# The recipes shipped inside the package (package data): `llava15 train stage2_finetune` finds them.
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


class ConfigError(ValueError):
    """A recipe or override is invalid; the message names the dotted key."""


@dataclass
class ModelConfig:
    vision_tower: str = "openai/clip-vit-large-patch14-336"
    """Vision encoder: hub id or local folder (CLIP or SigLIP vision model)."""
    llm: str = "lmsys/vicuna-7b-v1.5"
    """Causal LM: hub id, local folder, a `.gguf` file or the alias `smollm2-135m-instruct`."""
    init_checkpoint: str | None = None
    """Start from a whole llava15/LLaVA checkpoint instead of assembling tower + LM (task fine-tuning)."""
    init_projector: str | None = None
    """Projector weights to start from: a stage-1 output (`mm_projector.bin`/safetensors) or folder."""
    projector: str = "mlp2x_gelu"
    """Projector type: `mlp2x_gelu` (LLaVA-1.5) or `linear` (original LLaVA)."""
    vision_feature_layer: int = -2
    """Hidden-state index of the vision tower used as image features (-2 = penultimate layer)."""
    vision_feature_select_strategy: str = "default"
    """`default` drops the CLS token (576 tokens at 336 px); `full` keeps it."""
    attn_implementation: str = "sdpa"
    """Attention kernel passed to transformers: `sdpa`, `eager`, `flash_attention_2`, `flex_attention`."""
    dtype: str = "auto"
    """Weight dtype for training: `auto` (bf16 on GPU, fp32 on CPU), `bfloat16`, `float16`, `float32`."""
    quantize: str = "none"
    """Frozen language model stored quantized (QLoRA; the original's `--bits 4/8`): `nf4` (4-bit NormalFloat,
    double quantization, computing in bf16 on GPU), `int8` (LLM.int8()), `none`. Only the LLM's linear
    layers; embeddings, lm_head, projector and vision tower are not quantized. Needs bitsandbytes, one
    process, and a stage that does not train the LLM's weights (`projector+lora`, `projector`)."""

    def __post_init__(self) -> None:
        _check_choice("model.projector", self.projector, ("mlp2x_gelu", "linear"))
        _check_choice("model.vision_feature_select_strategy", self.vision_feature_select_strategy,
                      ("default", "full"))
        _check_choice("model.dtype", self.dtype, ("auto", "bfloat16", "float16", "float32"))
        _check_choice("model.quantize", self.quantize, ("none", "nf4", "int8"))


@dataclass
class DataConfig:
    path: str = ""
    """Training data: a LLaVA JSON/JSONL file, a Hugging Face `datasets` folder / parquet file, or a Hub
    dataset `hf://<repo_id>[/file]` (see docs/data.md)."""
    image_folder: str = ""
    """Root folder that image paths in the data are relative to."""
    template: str = DEFAULT_TEMPLATE
    """Chat template name (`plain` for stage 1, `vicuna_v1` for stage 2; see data/templates.py)."""
    image_aspect_ratio: str = "pad"
    """`pad` (expand to square with the CLIP mean colour), `square` (resize + centre crop), `resize`."""
    model_max_length: int = 2048
    """Maximum tokens per sample, image tokens included."""
    bad_records: str = "skip"
    """What to do with an invalid record: `skip` (counted and logged) or `fail`."""
    max_bad_fraction: float = 0.001
    """Largest fraction of records that may be skipped as invalid; above it the run stops before the first
    step with a summary by reason (e.g. a wrong `image_folder` makes every image record invalid)."""
    batching: str = "pack"
    """`pack` (rows of a token budget, no cross-sample attention) or `modality_grouped` (original)."""
    pack_tokens: int = 0
    """Token budget per packed row; 0 = one row per micro-batch when the language model runs llava15's
    packed attention (`sdpa`, the default: rows cost no padding and no cross-sample attention), else
    model_max_length."""
    padding_side: str = "right"
    """Padding side when batching by padding."""
    num_workers: int = 0
    """DataLoader worker processes that read, tokenize and preprocess (decode images) off the training
    loop; 0 does it in the training process."""
    balance_tokens: bool = True
    """Deal each optimizer step's samples into micro-batches of equal sample counts but balanced token
    counts (ranks finish their forward passes together); false: consecutive chunks, as the original."""

    def __post_init__(self) -> None:
        _check_choice("data.image_aspect_ratio", self.image_aspect_ratio, ("pad", "square", "resize"))
        _check_choice("data.bad_records", self.bad_records, ("skip", "fail"))
        _check_choice("data.batching", self.batching, ("pack", "modality_grouped"))
        _check_choice("data.padding_side", self.padding_side, ("left", "right"))
        if self.model_max_length <= 0:
            raise ConfigError(f"data.model_max_length must be positive, got {self.model_max_length}")
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ConfigError(f"data.max_bad_fraction must be between 0 and 1, got {self.max_bad_fraction}")


@dataclass
class LoraConfig:
    enabled: bool = False
    """Train LoRA adapters on the LLM instead of its full weights (projector is still fully trained)."""
    r: int = 128
    """LoRA rank (paper: 128)."""
    alpha: int = 256
    """LoRA alpha (paper: 256)."""
    dropout: float = 0.05
    """LoRA dropout (paper: 0.05)."""

    def __post_init__(self) -> None:
        if self.r <= 0 or self.alpha <= 0:
            raise ConfigError(f"lora.r and lora.alpha must be positive, got r={self.r}, alpha={self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TrainConfig:
    stage: str = "projector+llm"
    """What trains: `projector` (stage 1), `projector+llm` (stage 2), `projector+lora`, `all`."""
    output_dir: str = "runs/llava15"
    """Run folder: checkpoints, logs, the final checkpoint in `final/`."""
    max_steps: int = 0
    """Optimizer steps to run; 0 = `epochs` passes over the data."""
    epochs: float = 1.0
    """Passes over the data when max_steps is 0."""
    global_batch_size: int = 128
    """Samples per optimizer step over all devices; gradient accumulation is derived from it."""
    micro_batch_size: int = 16
    """Samples per device per forward pass."""
    lr: float = 2e-5
    """Peak learning rate."""
    projector_lr: float | None = None
    """Separate learning rate for the projector (LoRA recipe: 2e-5); None = `lr`."""
    weight_decay: float = 0.0
    """AdamW weight decay (not applied to biases and norm weights)."""
    warmup_ratio: float = 0.03
    """Fraction of steps of linear warm-up."""
    lr_scheduler: str = "cosine"
    """`cosine` (to 0 after warm-up) or `constant`."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.999
    """AdamW beta2."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    max_grad_norm: float = 0.0
    """Gradient clipping norm; 0 disables it (the original runs clip nothing under DeepSpeed)."""
    seed: int = 42
    """Seed of every random choice (data order, init, dropout)."""
    device: str = "auto"
    """`auto` (this rank's CUDA device when CUDA is available, else CPU), `cpu` (gloo between ranks even on
    a GPU machine), `cuda`."""
    precision: str = "auto"
    """`auto` (bf16 on GPU, fp32 on CPU), `bf16`, `fp32`."""
    gradient_checkpointing: bool = False
    """Deprecated spelling of `activation_checkpointing: full` (kept for older recipes)."""
    activation_checkpointing: str = "auto"
    """Recompute activations in the backward pass to save memory: `none`, `full` (every decoder layer),
    `every_k` (e.g. `every_2`: every second layer), or `auto`: none on CPU and where no LLM weight trains
    (stage 1: only input gradients flow back through the frozen LLM), `every_2` for LoRA, `full` for
    full fine-tuning on GPU."""
    async_save: bool = False
    """Write resumable checkpoints in a background thread (torch.distributed.checkpoint.async_save) while
    training goes on; the next save or the end of the run waits for it."""
    mesh: list[int] | None = None
    """Device mesh for FSDP2: null = shard over all ranks; `[replicate, shard]` = HSDP, e.g. `[4, 8]` for
    4 nodes of 8 GPUs (shard within a node, replicate across nodes)."""
    sample_log: str = ""
    """JSONL file of the record ids each rank consumed at each optimizer step (`{"step", "rank", "ids"}`,
    `step` counting from 1); empty: no log. A resumed run appends, never repeating a logged step."""
    save_steps: int = 0
    """Save a resumable checkpoint every N optimizer steps; 0 = only at the end."""
    save_total_limit: int = 1
    """Keep the last K resumable checkpoints."""
    resume: str = "auto"
    """`auto` (continue from the latest checkpoint in output_dir if any; an error if that run's recipe
    differs in keys that may not change on resume), `force` (as `auto`, even with a different recipe),
    a checkpoint path, or `none`."""
    log_steps: int = 1
    """Console progress line every N optimizer steps when not on a terminal (JSONL and TensorBoard get every step)."""
    tensorboard: bool = True
    """Write TensorBoard event files."""
    wandb: bool = False
    """Log to Weights & Biases (when installed)."""
    dry_run: bool = False
    """Build everything, run two steps, report peak memory and projected time, then stop."""
    compile: bool = False
    """torch.compile each decoder layer of the language model (dynamic shapes; the first steps compile)."""
    last_layer_supervised_only: bool = True
    """Compute the last decoder layer's row-wise work (query and output projections, attention queries,
    MLP) only on rows whose next token is supervised, the only rows the loss reads: same loss and
    gradients, less work. false: every row, as transformers computes it."""
    loss_normalization: str = "token"
    """`token`: mean over every supervised token of the optimizer step, all devices and micro-batches
    together (the same number whatever the device count or accumulation); `micro_batch`: the original's
    mean over each micro-batch's tokens, averaged over micro-batches and ranks."""

    def checkpoint_every(self, on_gpu: bool) -> int:
        """Every how many decoder layers to recompute (0: none), `activation_checkpointing` resolved."""
        choice = "full" if self.activation_checkpointing == "auto" and self.gradient_checkpointing \
            else self.activation_checkpointing
        if choice == "auto":
            if not on_gpu or self.stage == "projector":
                return 0  # CPU memory is not the limit; stage 1 needs no LLM weight gradient
            return 2 if self.stage == "projector+lora" else 1
        if choice in ("none", "full"):
            return 0 if choice == "none" else 1
        return int(choice.split("_")[1])

    @staticmethod
    def checkpointing_phrase(every: int) -> str:
        """`checkpoint_every`'s result in words (the trainer's log and the memory projection say the same)."""
        return "none" if not every else "every decoder layer" if every == 1 else f"every {every} layers"

    def __post_init__(self) -> None:
        _check_choice("train.stage", self.stage, ("projector", "projector+llm", "projector+lora", "all"))
        _check_choice("train.device", self.device, ("auto", "cpu", "cuda"))
        _check_choice("train.precision", self.precision, ("auto", "bf16", "fp32"))
        _check_choice("train.lr_scheduler", self.lr_scheduler, ("cosine", "constant"))
        _check_choice("train.loss_normalization", self.loss_normalization, ("token", "micro_batch"))
        if self.global_batch_size % self.micro_batch_size:
            raise ConfigError(
                f"train.global_batch_size ({self.global_batch_size}) must be a multiple of "
                f"train.micro_batch_size ({self.micro_batch_size})")
        ac = self.activation_checkpointing
        if ac not in ("auto", "none", "full") and not (ac.startswith("every_") and ac[6:].isdigit() and int(ac[6:]) > 0):
            raise ConfigError(f"train.activation_checkpointing must be auto, none, full or every_K (K ≥ 1, e.g. "
                              f"every_2); got {ac!r}")
        if self.mesh is not None and (not isinstance(self.mesh, list) or len(self.mesh) != 2
                                      or not all(isinstance(n, int) and n > 0 for n in self.mesh)):
            raise ConfigError(f"train.mesh must be null or [replicate, shard] (two positive integers); got {self.mesh!r}")


@dataclass
class RecipeConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model to build or load."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training data and how it is templated, tokenized and batched."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation, checkpoints, logging."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA settings (used when `train.stage` is `projector+lora`)."""

    def __post_init__(self) -> None:
        if (self.train.stage == "projector+lora") != self.lora.enabled:
            raise ConfigError(f"train.stage={self.train.stage} and lora.enabled={str(self.lora.enabled).lower()} "
                              "disagree: a LoRA run sets both train.stage=projector+lora and lora.enabled=true")


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def _unknown_key(path: str, key: str, known: list[str]) -> ConfigError:
    hint = difflib.get_close_matches(key, known, n=1)
    did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
    return ConfigError(f"unknown key '{path}{key}'{did_you_mean} (known: {', '.join(known)}; "
                       "`llava15 train --list-keys` lists them with their meaning)")


def _coerce(path: str, value: Any, typ: Any) -> Any:
    """Check `value` against the annotation `typ`, converting int→float where YAML reads `1` for `1.0`."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(typ)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(path, value, option)
            except ConfigError:
                pass
        raise ConfigError(f"{path}: expected {typ}, got {value!r}")
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is float and isinstance(value, str):
        try:  # YAML 1.1 reads "2e-5" as a string
            return float(value)
        except ValueError:
            pass
    if typ in (int, float, str, bool) and not (isinstance(value, typ) and
                                               not (typ is int and isinstance(value, bool))):
        raise ConfigError(f"{path}: expected {typ.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, data: dict, path: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'recipe'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key(path, key, names)
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = _build(typ, value or {}, f"{path}{key}.")
        else:
            kwargs[key] = _coerce(f"{path}{key}", value, typ)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path or 'recipe'}: {exc}") from exc


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b=value` strings to a nested dict (values parsed as YAML scalars)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = data
        for key in keys[:-1]:
            if node.get(key) is None:  # absent, or an empty section in the YAML
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {key} is not a section")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({_yaml_problem(exc)})") from None
        node[keys[-1]] = value
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error, not a silent win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; malformed YAML and duplicate keys raise `ConfigError` naming the file and line."""
    try:
        return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}, {_yaml_problem(exc)}") from None


def packaged_recipes() -> list[str]:
    """Names of the recipes shipped with llava15 (without `.yaml`)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A recipe file: an existing path, or the name of a packaged recipe (`stage2_finetune[.yaml]`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    packaged = RECIPES_DIR / name
    # `recipes/x.yaml` (the checkout's old location) and `x` both find the packaged copy
    if packaged.is_file() and (path.parent == Path(".") or path.parent.name == "recipes"):
        return packaged
    raise ConfigError(f"recipe {str(name_or_path)!r} not found: not a file, and not one of the packaged "
                      f"recipes ({', '.join(packaged_recipes())})")


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> RecipeConfig:
    """Read a recipe YAML (a path or a packaged recipe's name; defaults when None) and apply overrides."""
    data: dict = {}
    if path is not None:
        path = resolve_recipe(path)
        loaded = read_yaml(path)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of sections")
        data = loaded
    data = apply_overrides(data, overrides or [])
    try:
        return _build(RecipeConfig, data)
    except ConfigError as exc:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}{exc}") from None


def recipe_to_dict(cfg: RecipeConfig) -> dict:
    return dataclasses.asdict(cfg)


def save_recipe(cfg: RecipeConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(recipe_to_dict(cfg), sort_keys=False))


def _type_name(typ: Any) -> str:
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(t) for t in typing.get_args(typ))
    return "None" if typ is type(None) else getattr(typ, "__name__", str(typ))


def describe_keys(width: int = 100) -> str:
    """Every recipe key with its type, default and documentation, then the packaged recipes."""
    import textwrap

    lines = []
    defaults = RecipeConfig()
    for section in dataclasses.fields(RecipeConfig):
        cls = typing.get_type_hints(RecipeConfig)[section.name]
        hints, docs = typing.get_type_hints(cls), field_docs(cls)
        lines.append(f"{section.name}: {' '.join(field_docs(RecipeConfig)[section.name].split())}")
        for f in dataclasses.fields(cls):
            default = getattr(getattr(defaults, section.name), f.name)
            lines.append(f"  {section.name}.{f.name} ({_type_name(hints[f.name])}, default {default!r})")
            lines.extend(textwrap.wrap(" ".join(docs.get(f.name, "").split()), width - 6,
                                       initial_indent="      ", subsequent_indent="      ", break_on_hyphens=False))
        lines.append("")
    lines.append("packaged recipes (`llava15 train NAME key.sub=value ...`): " + ", ".join(packaged_recipes()))
    return "\n".join(lines)


def field_docs(cls: type) -> dict[str, str]:
    """Docstrings of a config dataclass's fields (the string literal under each field)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and \
                isinstance(getattr(nxt, "value", None), ast.Constant):
            docs[node.target.id] = nxt.value.value  # type: ignore[union-attr]
    return docs
