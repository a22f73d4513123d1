"""`train.compile`: `torch.compile` each decoder layer of the language model in place.

Why per layer: compiling the whole LLaVA forward breaks its graph at the image scatter and at the
supervised-position selection and recompiles for every new sequence length (bench-small stage 2 on a
2-core CPU: 99 s of warm-up, then slower than eager). One dynamic graph per layer (`nn.Module.compile`,
dynamic shapes) compiles once (~20 s there) and fuses the layer's small operations (RMSNorm, rotary,
SiLU-gate, residuals). The layers keep their modules, so FSDP2 sharding, activation checkpointing, LoRA
and saving see the same model. Measured (benchmarks/RESULTS.md, train_throughput `--compile`): on
bench-small's CPU workload it gains nothing over eager and costs 20-27 s of warm-up; it is off by default.
"""

from __future__ import annotations

import torch

from llava15.model.last_layer_rows import decoder_layers


def compile_decoder_layers(model: torch.nn.Module, skip_last: bool = False) -> int:
    """Compile every decoder layer (all but the last with `skip_last`); returns how many."""
    layers = decoder_layers(model)
    if layers is None:
        raise ValueError("train.compile: no `language_model.layers` list of decoder layers in this model; "
                         "set train.compile=false")
    chosen = list(layers)[:-1] if skip_last else list(layers)
    for layer in chosen:
        layer.compile(dynamic=True)
    return len(chosen)
