"""What trains in each stage: one function from a stage spec to `requires_grad`, plus a report table.

Contract: `apply_freeze(model, spec) -> str` sets `requires_grad` on every parameter of a
`LlavaForConditionalGeneration` (or a peft model wrapping one) and returns (and logs) a table of
trainable / total parameters per component (vision_tower, multi_modal_projector, language_model,
lm_head, and LoRA adapters when present).

| spec | trains | original LLaVA |
| --- | --- | --- |
| `projector` | the projector | stage 1 (`tune_mm_mlp_adapter`) |
| `projector+llm` | projector, LLM (embeddings included), lm_head | stage 2 |
| `projector+lora` | projector and the LoRA adapters (`apply_lora` first) | LoRA recipe |
| `all` | everything, vision tower included | not used by LLaVA-1.5 |

The vision tower is frozen in every spec but `all`; nothing is hidden in a `no_grad` forward. A
`linear` projector (see build.py) keeps its identity `linear_2` frozen in every spec, so only the
single original Linear trains.
"""

from __future__ import annotations

import logging

from torch import nn

from llava15.model.projector import is_linear

log = logging.getLogger(__name__)

SPECS = ("projector", "projector+llm", "projector+lora", "all")
COMPONENTS = ("vision_tower", "multi_modal_projector", "language_model", "lm_head", "lora")
_PEFT_PREFIX = "base_model.model."


def component_of(name: str) -> str:
    """Which LLaVA component a parameter name (plain or peft-wrapped) belongs to."""
    if "lora_" in name:
        return "lora"
    if name.startswith(_PEFT_PREFIX):
        name = name[len(_PEFT_PREFIX):]
    for comp in ("vision_tower", "multi_modal_projector", "language_model"):
        if name.startswith(f"model.{comp}."):
            return comp
    if name.startswith("lm_head."):
        return "lm_head"
    raise ValueError(f"parameter {name!r} belongs to no LLaVA component ({', '.join(COMPONENTS[:4])})")


def _trains(component: str, spec: str) -> bool:
    return {
        "projector": component == "multi_modal_projector",
        "projector+llm": component in ("multi_modal_projector", "language_model", "lm_head"),
        "projector+lora": component in ("multi_modal_projector", "lora"),
        "all": True,
    }[spec]


def apply_freeze(model: nn.Module, spec: str) -> str:
    """Set requires_grad for stage `spec`; return the trainable-parameter table (also logged)."""
    if spec not in SPECS:
        raise ValueError(f"freeze spec {spec!r} unknown; choose one of {list(SPECS)}")
    named = list(model.named_parameters())
    has_lora = any("lora_" in n for n, _ in named)
    if spec == "projector+lora" and not has_lora:
        raise ValueError("freeze spec 'projector+lora' needs LoRA adapters: call llava15.model.lora.apply_lora "
                         "first")
    if has_lora and spec in ("projector+llm", "all"):
        raise ValueError(f"freeze spec {spec!r} on a model with LoRA adapters: merge them first or use "
                         "'projector+lora'")
    linear_projector = is_linear(getattr(model, "config", None))
    for name, p in named:
        on = _trains(component_of(name), spec)
        if linear_projector and ".multi_modal_projector.linear_2." in f".{name}":
            on = False  # identity second layer of the original single-Linear projector
        p.requires_grad_(on)
    table = trainable_table(model)
    log.info("freeze %s:\n%s", spec, table)
    return table


def trainable_table(model: nn.Module) -> str:
    """Trainable / total parameter counts per component, as a fixed-width text table."""
    counts = {c: [0, 0] for c in COMPONENTS}
    seen: set[int] = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:  # tied weights count once
            continue
        seen.add(id(p))
        c = counts[component_of(name)]
        c[1] += p.numel()
        c[0] += p.numel() if p.requires_grad else 0
    rows = [(c, t, n) for c, (t, n) in counts.items() if n or c != "lora"]
    total_t, total_n = sum(r[1] for r in rows), sum(r[2] for r in rows)
    lines = [f"{'component':<24}{'trainable':>14}{'total':>14}"]
    lines += [f"{c:<24}{t:>14,}{n:>14,}" for c, t, n in rows]
    lines.append(f"{'all':<24}{total_t:>14,}{total_n:>14,}")
    return "\n".join(lines)
