"""One optimizer step over the micro-batches of one global batch.

Loss normalisation (`train.loss_normalization`):
- `token` (default): the step's loss is the mean over **every supervised token of the global batch**
  (all micro-batches, all ranks). The supervised-token count is summed over ranks before the first
  backward, each micro-batch contributes `sum_CE / global_count`, and because FSDP averages
  gradients over ranks each rank scales by `world_size`. The update is therefore the same whatever the
  device count and accumulation (the 2-process test checks it), and long answers weigh per token.
- `micro_batch`: the original's objective, the mean over each micro-batch's own tokens, averaged over
  accumulation steps and ranks (HF/DeepSpeed with GA=1: "mean of per-rank token means").

Every rank runs the same modules every micro-batch: a micro-batch without an image gets one dummy
(all-zero) image whose placeholder tokens carry no label (a separate packed segment, or an extra
padded row), so the vision tower and projector run and their gradient is exactly zero instead of
missing (FSDP2 needs the same collectives on every rank). With one process the same effect is had by
turning missing gradients of trainable parameters into zeros, so AdamW treats both runs alike.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from llava15.data.packing import boundaries
from llava15.model.last_layer_rows import LastLayerRows
from llava15.model.packed_attention import from_batch
from llava15.train.distributed import DistInfo, all_reduce_sum
from llava15.train.loss import IGNORE_INDEX, shift_targets, supervised_loss_sum, supervised_rows


@dataclass
class StepContext:
    dist: DistInfo
    loss_normalization: str = "token"
    max_grad_norm: float = 0.0
    autocast_dtype: torch.dtype | None = None  # bf16 autocast on a single GPU; None elsewhere
    image_token_id: int = 0
    num_image_tokens: int = 576
    image_size: int = 336
    text_needs_grad: bool = True  # False when only the projector trains (stage 1)
    last_layer: LastLayerRows | None = None  # the last decoder layer on supervised rows only


@dataclass
class StepResult:
    loss: float
    samples: int
    tokens: int
    supervised_tokens: int
    grad_norm: float | None


def add_dummy_image(batch: dict, image_token_id: int, num_tokens: int, size: int) -> dict:
    """Give an image-less micro-batch one zero image whose tokens carry no label and change no loss."""
    batch = dict(batch)
    ids, labels = batch["input_ids"], batch["labels"]
    img = torch.full((num_tokens,), image_token_id, dtype=ids.dtype, device=ids.device)
    if batch.get("attention_mask") is None:  # packed: one more row holding the image as its own segment
        pos = batch["position_ids"]
        width = max(ids.shape[1], num_tokens)
        grow = width - ids.shape[1]
        if grow:  # lengthen the rows with ignored tokens that only follow (never precede) real ones
            steps = torch.arange(1, grow + 1, device=pos.device)
            pos = torch.cat([pos, pos[:, -1:] + steps], 1)
            ids = nn.functional.pad(ids, (0, grow))
            labels = nn.functional.pad(labels, (0, grow), value=IGNORE_INDEX)
        new_ids = torch.zeros(1, width, dtype=ids.dtype, device=ids.device)
        new_ids[0, :num_tokens] = img
        batch["input_ids"] = torch.cat([ids, new_ids])
        batch["labels"] = torch.cat([labels, torch.full((1, width), IGNORE_INDEX, dtype=labels.dtype,
                                                        device=labels.device)])
        batch["position_ids"] = torch.cat([pos, torch.arange(width, device=pos.device)[None]])
        if batch.get("sample_lengths") is not None:
            batch.update(boundaries(batch["position_ids"], batch["labels"]))
    else:  # padded: one more row holding only the image
        width = max(ids.shape[1], num_tokens)
        pad = width - ids.shape[1]
        mask = batch["attention_mask"]
        new_ids = torch.zeros(1, width, dtype=ids.dtype, device=ids.device)
        new_ids[0, :num_tokens] = img
        new_mask = torch.zeros(1, width, dtype=mask.dtype, device=mask.device)
        new_mask[0, :num_tokens] = 1
        batch["input_ids"] = torch.cat([nn.functional.pad(ids, (0, pad)), new_ids])
        batch["labels"] = torch.cat([nn.functional.pad(labels, (0, pad), value=IGNORE_INDEX),
                                     torch.full((1, width), IGNORE_INDEX, dtype=labels.dtype,
                                                device=labels.device)])
        batch["attention_mask"] = torch.cat([nn.functional.pad(mask, (0, pad)), new_mask])
    batch["pixel_values"] = torch.zeros(1, 3, size, size, device=ids.device)
    return batch


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def count_supervised(batch: dict) -> int:
    return int((shift_targets(batch["labels"]) != IGNORE_INDEX).sum())


def count_tokens(batch: dict) -> int:
    """Real (non-padding) tokens: attention_mask ones when padded, every position when packed."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, micro_batches: list[dict],
               ctx: StepContext) -> StepResult:
    """Forward/backward every micro-batch of this rank, then one optimizer and scheduler step."""
    dist_info = ctx.dist
    local_count = sum(count_supervised(b) for b in micro_batches)
    global_count = all_reduce_sum(local_count, dist_info.device)
    n_micro = len(micro_batches)
    loss_acc = torch.zeros((), dtype=torch.float64, device=dist_info.device)  # no host sync per micro-batch
    fsdp = dist_info.distributed and hasattr(model, "set_requires_gradient_sync")
    for i, batch in enumerate(micro_batches):
        if dist_info.distributed and batch.get("pixel_values") is None:
            batch = add_dummy_image(batch, ctx.image_token_id, ctx.num_image_tokens, ctx.image_size)
        # the sample boundaries come from the host batch: the forward never reads them back from the device
        packed = from_batch(batch, last_layer_rows=ctx.last_layer is not None).to(dist_info.device) \
            if batch.get("sample_lengths") is not None else None
        rows = supervised_rows(batch["labels"]).to(dist_info.device) if ctx.last_layer is not None else None
        batch = to_device(batch, dist_info.device)
        if fsdp:  # reduce-scatter gradients only after the last micro-batch
            model.set_requires_gradient_sync(i == n_micro - 1)
        autocast = torch.autocast(dist_info.device.type, dtype=ctx.autocast_dtype) \
            if ctx.autocast_dtype is not None else contextlib.nullcontext()
        # Stage 1, one process: a text-only micro-batch cannot reach the projector; forward only.
        no_grad = batch.get("pixel_values") is None and not ctx.text_needs_grad
        # open through the backward too: activation checkpointing reruns the last layer there
        rows_only = ctx.last_layer.rows_only(rows) if rows is not None else contextlib.nullcontext()
        with rows_only:
            with autocast, torch.no_grad() if no_grad else contextlib.nullcontext():
                loss_sum, count = supervised_loss_sum(model, batch, packed)
            if ctx.loss_normalization == "token":
                scaled = loss_sum * (dist_info.world_size / max(global_count, 1.0))
                loss_acc += loss_sum.detach()
            else:
                scaled = loss_sum / max(count, 1) / n_micro
                loss_acc += scaled.detach()
            if not no_grad:
                scaled.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not dist_info.distributed:
        for p in trainable:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
    grad_norm = None
    if ctx.max_grad_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(trainable, ctx.max_grad_norm)
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if ctx.loss_normalization == "token":
        loss = all_reduce_sum(float(loss_acc), dist_info.device) / max(global_count, 1.0)
    else:
        loss = all_reduce_sum(float(loss_acc), dist_info.device) / dist_info.world_size
    samples = sum(int(b.get("num_samples", b["input_ids"].shape[0])) for b in micro_batches)
    tokens = sum(count_tokens(b) for b in micro_batches)
    return StepResult(loss=loss, samples=int(all_reduce_sum(samples, dist_info.device)),
                      tokens=int(all_reduce_sum(tokens, dist_info.device)),
                      supervised_tokens=int(global_count), grad_norm=grad_norm)
