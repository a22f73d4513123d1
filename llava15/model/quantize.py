"""Quantized weights for the language model: the frozen base of QLoRA training, and quantized decoding.

Contract:
- Only the language model's `nn.Linear` layers (`q,k,v,o,gate,up,down_proj` for Llama) are quantized;
  the embeddings, norms, `lm_head`, the projector and the vision tower keep their dtype (what the
  original `--bits 4/8` and bitsandbytes' transformers integration do, and what LLaVA needs: the
  projector trains, and the tower's features feed it).
- `TRAIN_METHODS` (`model.quantize`): `none`, `nf4` (bitsandbytes `Linear4bit`: NF4, blocks of 64, double
  quantization of the block scales, compute in `compute_dtype`: bf16 on GPU, as the original's
  `--bits 4`), `int8` (bitsandbytes `Linear8bitLt`: LLM.int8() with outlier threshold 6.0, the
  original's `--bits 8`). `check_training_quantize(method, stage, distributed)` says in words why a
  recipe cannot train on a quantized base. `quantize_for_training(model, method, device, compute_dtype)`
  quantizes on `device` one layer at a time (the full-precision copy of one layer at most is on the GPU)
  and marks the model `is_loaded_in_4bit`/`is_loaded_in_8bit`, so that peft wraps these layers with its
  bitsandbytes LoRA layers.
- `INFER_METHODS` (`llava15.load(path, quantize=...)`, `--quantize`): weight-only quantization for
  decoding, `quantize_for_inference(model, method) -> QuantSummary` on the device the weights are on.
- `dequantized_weight(module)`, `dequantize_llm(model)`: the full-precision weights the quantized layers
  compute with (used by `llava15 merge`); `linear_bytes(model) -> (stored, full_precision)`.

Which implementation runs where (measured: one `[1, in] x [in, out]` matrix-vector product, the batch-1
decode shape, 1 thread of a shared 2-core AMD EPYC (Zen 4, KVM), eager, microseconds; torch 2.13 CPU,
bitsandbytes 0.50.2 with outlier threshold 0, torchao 0.18.0):

| shape        | fp32 | bnb int8 | torchao int8 | int8 dequant+matmul | bnb nf4 | torchao nf4 | fp8 upcast |
| 512 x 1376   |  144 |      259 |          264 |                 175 |     322 |        6076 |       3472 |
| 4096 x 4096  | 3941 |     2318 |        85770 |               71368 |   56139 |      416603 |     192686 |

and, in a second run (other load): aten's `_weight_int8pack_mm` with bf16 activations 38.7 us at
512 x 1376 (fp32 66.3), 950 us at 4096 x 4096 (fp32 3571; with fp32 activations it has no fast path:
14198), 3505 us at 4096 x 11008 (fp32 9908).

torch.compile did not fuse the int8 dequantization into the
product on CPU (torchao int8 43790 us, dequant+matmul 42928 us at 4096 x 4096). End to end (bench-small
batch-1 decode, 2 threads, shared machine): full precision 25.3 tok/s, bitsandbytes int8 2.9 (threshold
6.0) / 3.4 (threshold 0), `WeightOnlyLinear` dequantizing in the product 13.7. Hence `int8` is
`WeightOnlyLinear` everywhere: on CPU through `_weight_int8pack_mm` (bf16 activations), on CUDA as
gpt-fast's layer, `F.linear(x, w.to(x.dtype)) * scale`, which the compiled decode step fuses into one
kernel reading 1 byte per weight (gpt-fast measured 155.6 vs 104.9 tok/s for bf16, Llama-2-7B on an
A100: spec/perf_anchors.md). `nf4` is bitsandbytes everywhere (its CUDA gemv kernel reads 4-bit
weights; on CPU it saves memory, not time). `fp8` (e4m3, one scale per output channel) is the same
layer as CUDA's int8, dequantized in the product; on CPU it runs, slowly, for checking. GPU speeds of
these paths are not measured in this repository yet (`benchmarks/gpu_decode.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

TRAIN_METHODS = ("none", "nf4", "int8")
INFER_METHODS = ("int8", "fp8", "nf4")
NF4_BLOCK = 64  # QLoRA paper and bitsandbytes' default; the block scales are quantized again in blocks of 256
INT8_OUTLIER_THRESHOLD = 6.0  # LLM.int8(), the value the original's `--bits 8` (BitsAndBytesConfig) uses
FP8_MAX = 448.0  # largest float8_e4m3fn
_INT8_CPU_KERNEL = getattr(torch, "_weight_int8pack_mm", None)  # x[M,K] bf16, w[N,K] int8, scale[N] -> [M,N]


@dataclass
class QuantSummary:
    """What a quantization did, for the run's log."""

    method: str
    implementation: str
    layers: int
    stored_bytes: int
    full_bytes: int  # the same weights in the dtype they had before
    weight_error: float  # ||W - dequantized(W)|| / ||W|| over all quantized layers (Frobenius)

    def describe(self) -> str:
        return (f"quantized {self.layers} linear layers of the language model to {self.method} "
                f"({self.implementation}): {self.stored_bytes / 2**20:.2f} MiB instead of "
                f"{self.full_bytes / 2**20:.2f} MiB ({self.stored_bytes / max(self.full_bytes, 1):.3f}x), relative "
                f"weight error {self.weight_error:.4f}; embeddings, lm_head, projector and vision tower unchanged")


class WeightOnlyLinear(nn.Module):
    """A frozen linear layer storing int8 or float8 weights with one scale per output channel."""

    def __init__(self, linear: nn.Linear, storage: torch.dtype) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach().float()
        top = 127.0 if storage == torch.int8 else FP8_MAX
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / top
        q = w / scale[:, None]
        q = q.round().clamp(-127, 127).to(torch.int8) if storage == torch.int8 else q.to(storage)
        self.register_buffer("weight", q)
        self.register_buffer("scale", scale.to(linear.weight.dtype))
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    # On CPU, int8 goes through aten's int8-weight kernel with bf16 activations (see the module docstring's
    # table: the only int8 path there faster than fp32); False = the formula CUDA compiles, everywhere.
    cpu_kernel: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cpu_kernel and x.device.type == "cpu" and self.weight.dtype == torch.int8 and _INT8_CPU_KERNEL:
            rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
            out = _INT8_CPU_KERNEL(rows, self.weight, self.scale.to(torch.bfloat16))
            out = out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        else:
            out = nn.functional.linear(x, self.weight.to(x.dtype)) * self.scale.to(x.dtype)
        return out if self.bias is None else out + self.bias.to(x.dtype)

    def dequantized(self) -> torch.Tensor:
        return self.weight.float() * self.scale.float()[:, None]


def _language_model(model: nn.Module) -> nn.Module:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return base.model.language_model
    except AttributeError:
        raise ValueError("quantization expects a LlavaForConditionalGeneration (model.language_model)") from None


def _linears(root: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, layer) for every plain nn.Linear under `root`."""
    found = []
    for parent in root.modules():
        for attr, child in parent.named_children():
            if type(child) is nn.Linear:
                found.append((parent, attr, child))
    return found


def _full_bytes(layer: nn.Linear) -> int:
    return sum(p.numel() * p.element_size() for p in layer.parameters())


def check_training_quantize(method: str, stage: str, distributed: bool) -> None:
    """Raise ValueError (naming `model.quantize`) when this recipe cannot train on a quantized base."""
    if method not in TRAIN_METHODS:
        raise ValueError(f"model.quantize must be one of {', '.join(TRAIN_METHODS)}; got {method!r}")
    if method == "none":
        return
    if stage in ("projector+llm", "all"):
        raise ValueError(f"model.quantize={method} freezes the language model in {method}, but train.stage={stage} "
                         "trains its weights: use train.stage=projector+lora with lora.enabled=true (QLoRA) or "
                         "train.stage=projector")
    if distributed:
        raise ValueError(f"model.quantize={method} runs on one process: FSDP2 does not shard bitsandbytes weights "
                         "(QLoRA exists to fit one GPU; use LoRA without quantization on several)")


def _bnb():
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ImportError("quantization needs bitsandbytes: pip install 'llava15[quant]' "
                          "(or pip install bitsandbytes)") from None
    return bnb


def _bnb_layer(layer: nn.Linear, method: str, device: torch.device, compute_dtype: torch.dtype) -> nn.Module:
    bnb = _bnb()
    weight = layer.weight.detach()
    bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().to(device, compute_dtype),
                                                        requires_grad=False)
    if method == "nf4":
        q = bnb.nn.Linear4bit(layer.in_features, layer.out_features, bias=False, compute_dtype=compute_dtype,
                              compress_statistics=True, quant_type="nf4", device="meta")
        q.weight = bnb.nn.Params4bit(weight, requires_grad=False, blocksize=NF4_BLOCK, compress_statistics=True,
                                     quant_type="nf4").to(device)  # quantizes on `device`
    else:
        q = bnb.nn.Linear8bitLt(layer.in_features, layer.out_features, bias=False, has_fp16_weights=False,
                                threshold=INT8_OUTLIER_THRESHOLD, device="meta")
        q.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False).to(device)
        # Linear8bitLt's state dict holds `SCB` and `weight_format` next to `weight`; torch.distributed's
        # state-dict helpers (the training checkpoints) look each key up as a module attribute.
        q.SCB, q.weight_format = q.weight.SCB, torch.tensor(0, dtype=torch.uint8)
    q.bias = bias
    return q.requires_grad_(False)


def _replace(model: nn.Module, make, method: str, implementation: str, only_attr: str | None = None) -> QuantSummary:
    lm = _language_model(model)
    layers = [t for t in _linears(lm) if only_attr is None or t[1] == only_attr]
    if not layers:
        raise ValueError("no nn.Linear in the language model to quantize (already quantized?)")
    full = stored = 0
    err = norm = 0.0
    for parent, attr, layer in layers:
        full += _full_bytes(layer)
        q = make(layer)
        w = layer.weight.detach().float()
        err += float((dequantized_weight(q).to(w.device) - w).pow(2).sum())
        norm += float(w.pow(2).sum())
        setattr(parent, attr, q)
        stored += module_bytes(q)
        del layer, w
    return QuantSummary(method, implementation, len(layers), stored, full, (err / max(norm, 1e-30)) ** 0.5)


def quantize_for_training(model: nn.Module, method: str, device: torch.device | str, compute_dtype: torch.dtype,
                          only_attr: str | None = None) -> QuantSummary:
    """Quantize the LLM's linear layers in place on `device` for QLoRA (module docstring); `only_attr`
    restricts it to children of that attribute name (peft's `base_layer`, for `llava15 merge`)."""
    if method not in TRAIN_METHODS or method == "none":
        raise ValueError(f"quantize_for_training: method must be nf4 or int8, got {method!r}")
    device = torch.device(device)
    summary = _replace(model, lambda lin: _bnb_layer(lin, method, device, compute_dtype), method,
                       "bitsandbytes " + ("Linear4bit, NF4 + double quantization" if method == "nf4"
                                          else "Linear8bitLt, LLM.int8()"), only_attr)
    setattr(model, "is_loaded_in_4bit" if method == "nf4" else "is_loaded_in_8bit", True)
    return summary


def quantize_for_inference(model: nn.Module, method: str) -> QuantSummary:
    """Weight-only quantization of the LLM's linear layers where they are (module docstring's table)."""
    if method not in INFER_METHODS:
        raise ValueError(f"quantize must be one of {', '.join(INFER_METHODS)}; got {method!r}")
    lm = _language_model(model)
    first = next(lm.parameters())
    device, dtype = first.device, first.dtype
    if method == "nf4":
        summary = _replace(model, lambda lin: _bnb_layer(lin, method, device, dtype), method,
                           "bitsandbytes Linear4bit (NF4, double quantization)")
    else:
        storage = torch.int8 if method == "int8" else torch.float8_e4m3fn
        if device.type == "cpu":
            log.warning("fp8 weights on CPU are upcast at every step: smaller, but slower than the unquantized "
                        "model (measured ~24x for one layer); use it on a GPU")
        kernel = ("aten int8 kernel, bf16 activations" if method == "int8" and device.type == "cpu"
                  else "dequantized in the product")
        summary = _replace(model, lambda lin: WeightOnlyLinear(lin, storage), method,
                           f"weight-only {method}, one scale per output channel, {kernel}")
    return summary


def dequantized_weight(module: nn.Module) -> torch.Tensor:
    """The full-precision weight a quantized layer computes with (fp32)."""
    if isinstance(module, WeightOnlyLinear):
        return module.dequantized()
    if type(module) is nn.Linear:
        return module.weight.detach().float()
    bnb = _bnb()
    w = module.weight
    if isinstance(module, bnb.nn.Linear4bit):
        return bnb.functional.dequantize_4bit(w.data, w.quant_state).float()
    if isinstance(module, bnb.nn.Linear8bitLt):
        scb = next(s for s in (getattr(w, "SCB", None), module.state.SCB, getattr(module, "SCB", None))
                   if s is not None)  # where it lives depends on whether the layer has run
        return w.data.float() * (scb.float()[:, None] / 127.0)
    raise TypeError(f"not a quantized linear layer: {type(module).__name__}")


def module_bytes(module: nn.Module) -> int:
    """Bytes a layer stores: parameters, buffers and bitsandbytes' quantization state."""
    total = sum(t.numel() * t.element_size() for t in (*module.parameters(recurse=False),
                                                       *module.buffers(recurse=False)) if t is not None)
    state = getattr(getattr(module, "weight", None), "quant_state", None)
    if state is not None:
        total += sum(v.numel() * v.element_size() for v in state.as_dict().values() if isinstance(v, torch.Tensor))
    scb = getattr(getattr(module, "weight", None), "SCB", None)
    if isinstance(scb, torch.Tensor):
        total += scb.numel() * scb.element_size()
    return total


def is_quantized_linear(module: nn.Module) -> bool:
    if isinstance(module, WeightOnlyLinear):
        return True
    name = type(module).__module__
    return name.startswith("bitsandbytes") and type(module).__name__ in ("Linear4bit", "Linear8bitLt")


def linear_bytes(model: nn.Module) -> tuple[int, int]:
    """(bytes stored, bytes of the same weights in fp32) over the LLM's linear layers."""
    lm = _language_model(model)
    stored = full = 0
    for name, module in lm.named_modules():
        if "lora_" in name:  # peft's adapters are trained, not part of the base
            continue
        if is_quantized_linear(module):
            stored += module_bytes(module)
            full += (module.in_features + (module.bias is not None)) * module.out_features * 4
        elif type(module) is nn.Linear:
            stored += _full_bytes(module)
            full += sum(p.numel() * 4 for p in module.parameters())
    return stored, full


def dequantize_llm(model: nn.Module, dtype: torch.dtype = torch.float32) -> int:
    """Replace every quantized layer of the LLM (peft's `base_layer`s included) by an nn.Linear holding its
    dequantized weight in `dtype`; returns how many were replaced."""
    n = 0
    for parent in list(_language_model(model).modules()):
        for attr, child in list(parent.named_children()):
            if is_quantized_linear(child):
                lin = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None,
                                device="meta")
                lin.weight = nn.Parameter(dequantized_weight(child).to(dtype), requires_grad=False)
                if child.bias is not None:
                    lin.bias = nn.Parameter(child.bias.detach().to(dtype), requires_grad=False)
                setattr(parent, attr, lin)
                n += 1
    return n
