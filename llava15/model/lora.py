"""LoRA on the language model (peft), the paper's variant: r 128, alpha 256, dropout 0.05.

Contract:
- `apply_lora(model, r=128, alpha=256, dropout=0.05) -> PeftModel`: adapters on every `nn.Linear` of
  the LLM (`q,k,v,o,gate,up,down_proj` for Llama), never `lm_head`, the vision tower or the projector
  (the original `find_all_linear_names` leaves out only the multimodal parts and `lm_head`); the projector stays fully trainable (freeze spec `projector+lora`).
- `save_lora(model, out_dir, base, template, image, recipe=None)`: the peft adapter
  (`adapter_config.json`, `adapter_model.safetensors`), every trainable non-LoRA parameter (the
  projector) in `non_lora_trainables.safetensors` under the LLaVA model's own names, and
  `llava15.json` naming the base checkpoint, template and image settings.
- `load_lora(adapter_dir, dtype=None) -> (PeftModel, LlavaBundle)`: base + adapter + non-LoRA weights,
  unmerged. `merge_lora(adapter_dir, dst) -> Path`: the merged model saved as a full llava15
  checkpoint (`save_checkpoint`). A QLoRA run (its recipe's `model.quantize` is nf4 or int8) trained its
  adapter on the quantized base, so the merge adds it to the *dequantized* base (re-quantized on CPU
  with the run's bitsandbytes settings): the merged model computes what the trained model computed. It
  differs from the full-precision base + adapter by the quantization error, which the merge measures
  (relative weight error; largest logit difference on a fixed text probe against the quantized model
  and against the full-precision base + adapter), logs, and records in the merged `llava15.json`
  (`merged_from.quantization`).
peft is imported lazily: `import llava15.model` works without the `train` extra.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llava15.data.images import ImageSettings
from llava15.model.format import META_FILE, CheckpointMeta, read_meta, write_meta
from llava15.model.freeze import apply_freeze
from llava15.model.load import LlavaBundle, load_bundle
from llava15.model.save import save_checkpoint

log = logging.getLogger(__name__)

NON_LORA_FILE = "non_lora_trainables.safetensors"
_PEFT_PREFIX = "base_model.model."


def lora_target_regex(model: nn.Module) -> str:
    """peft `target_modules` regex: every Linear inside the language model, by leaf name."""
    leaves = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                     if isinstance(m, nn.Linear) and name.startswith("model.language_model.")})
    if not leaves:
        raise ValueError("no nn.Linear found under model.language_model: is this a LlavaForConditionalGeneration?")
    return rf"model\.language_model\..*\.({'|'.join(map(re.escape, leaves))})"


def apply_lora(model: nn.Module, r: int = 128, alpha: int = 256, dropout: float = 0.05) -> Any:
    """Wrap `model` with LoRA adapters on the LLM's Linears; projector trainable, all else frozen."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                        target_modules=lora_target_regex(model), task_type=None)
    peft_model = get_peft_model(model, config)
    apply_freeze(peft_model, "projector+lora")
    return peft_model


def save_lora(model: Any, out_dir: str | Path, base: str | Path, template: str, image: ImageSettings,
              recipe: dict | None = None) -> Path:
    """Save adapter + non-LoRA trainables + the base reference (see module docstring)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for cfg in model.peft_config.values():
        cfg.base_model_name_or_path = str(base)
    model.save_pretrained(out)
    extra = {n[len(_PEFT_PREFIX):] if n.startswith(_PEFT_PREFIX) else n: p.detach().cpu().contiguous().clone()
             for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n}
    save_file(extra, str(out / NON_LORA_FILE), metadata={"format": "pt"})
    write_meta(out, CheckpointMeta(kind="llava15-lora", base=str(base), template=template, image=image,
                                   recipe=recipe))
    return out


def load_lora(adapter_dir: str | Path, dtype: torch.dtype | str | None = None) -> tuple[Any, LlavaBundle]:
    """Base checkpoint + adapter + non-LoRA trainables, unmerged; the bundle holds the base model."""
    from peft import PeftModel
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    meta = read_meta(adapter_dir)
    if meta is None or meta.kind != "llava15-lora" or not meta.base:
        what = f"no {META_FILE}" if meta is None else f"its {META_FILE} describes a full checkpoint"
        raise ValueError(f"{adapter_dir}: not a llava15 LoRA adapter folder ({what}); `llava15 merge` takes the "
                         "`adapter/` folder of a LoRA training run")
    bundle = load_bundle(meta.base, dtype=dtype)
    extra = load_file(str(adapter_dir / NON_LORA_FILE))
    own = dict(bundle.model.named_parameters())
    unknown = sorted(set(extra) - set(own))
    if unknown:
        raise ValueError(f"{adapter_dir / NON_LORA_FILE}: parameters not in the base model: {unknown[:5]}")
    with torch.no_grad():
        for name, t in extra.items():
            if own[name].shape != t.shape:
                raise ValueError(f"{adapter_dir / NON_LORA_FILE}: {name} has shape {tuple(t.shape)}, base model "
                                 f"{tuple(own[name].shape)}")
            own[name].copy_(t)
    model = PeftModel.from_pretrained(bundle.model, adapter_dir)
    model.eval()
    bundle.template, bundle.image = meta.template, meta.image
    bundle.meta = meta
    return model, bundle


def trained_quantization(meta: CheckpointMeta) -> str:
    """`model.quantize` of the run that wrote an adapter folder (`none` for plain LoRA)."""
    return str(((meta.recipe or {}).get("model") or {}).get("quantize", "none"))


MERGE_PROBE = "A photo of a red cube next to a blue sphere. What colour is the cube?"


def _probe_logits(model: Any, tokenizer: Any) -> torch.Tensor:
    ids = tokenizer(MERGE_PROBE, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def _dequantized_base(model: Any, tokenizer: Any, method: str) -> dict:
    """Swap the base layers under the adapter for the dequantized weights the run trained on; measure."""
    from llava15.model.quantize import dequantize_llm, quantize_for_training

    dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
    full = _probe_logits(model, tokenizer)
    summary = quantize_for_training(model, method, "cpu", dtype, only_attr="base_layer")
    quantized = _probe_logits(model, tokenizer)
    dequantize_llm(model, dtype)
    return {"method": method, "relative_weight_error": summary.weight_error,
            "probe_tokens": int(full.shape[1]), "_quantized_logits": quantized, "_full_logits": full}


def merge_lora(adapter_dir: str | Path, dst: str | Path, dtype: torch.dtype | str | None = None) -> Path:
    """Merge a llava15 LoRA adapter into its base and save a full checkpoint at `dst` (module docstring)."""
    model, bundle = load_lora(adapter_dir, dtype=dtype)
    method = trained_quantization(bundle.meta)
    report = _dequantized_base(model, bundle.tokenizer, method) if method != "none" else None
    merged = model.merge_and_unload()
    merged_from: dict[str, Any] = {"adapter": str(adapter_dir), "base": bundle.meta.base}
    if report is not None:
        after = _probe_logits(merged, bundle.tokenizer)
        report["max_logit_diff_vs_quantized"] = float((after - report.pop("_quantized_logits")).abs().max())
        report["max_logit_diff_vs_full_precision_base"] = float((after - report.pop("_full_logits")).abs().max())
        merged_from["quantization"] = report
        log.info("%s", describe_quantized_merge(report))
    provenance = CheckpointMeta(merged_from=merged_from)
    return save_checkpoint(merged, bundle.tokenizer, dst, bundle.template, bundle.image,
                           recipe=bundle.meta.recipe, meta=provenance)


def describe_quantized_merge(report: dict) -> str:
    return (f"QLoRA merge: the adapter was trained on the {report['method']} base, so it was added to the "
            f"dequantized base. The merged model differs from the full-precision base + adapter by the "
            f"quantization error: relative weight error {report['relative_weight_error']:.4f}, largest logit "
            f"difference {report['max_logit_diff_vs_full_precision_base']:.4g} on a {report['probe_tokens']}-token "
            f"probe; against the quantized model it was trained as: {report['max_logit_diff_vs_quantized']:.4g} "
            "(rounding only).")


def run_merge(args: Any) -> int:
    """`llava15 merge ADAPTER_DIR DST`."""
    out = merge_lora(args.adapter_dir, args.dst)
    meta = read_meta(out)
    report = ((meta.merged_from or {}).get("quantization") if meta is not None else None)
    if report:
        print(describe_quantized_merge(report))
    print(f"wrote merged checkpoint to {out}")
    return 0
