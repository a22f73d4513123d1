"""The last decoder layer on supervised rows only: the training loss and every gradient stay those of the
full computation, packed or padded, with activation checkpointing; outside a step nothing changes."""

from __future__ import annotations

import pytest
import torch
from transformers import LlavaForConditionalGeneration

from llava15.data.packing import pack_rows
from llava15.model.last_layer_rows import LastLayerRows
from llava15.model.packed_attention import packed_rows, use_packed_attention
from llava15.train.loss import supervised_loss_sum, supervised_rows


def _samples(model) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """An image sample, a two-turn text sample (two answer spans) and one with no answer at all."""
    cfg = model.config
    n_img = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
    g = torch.Generator().manual_seed(0)
    vocab = cfg.text_config.vocab_size

    def text(n: int) -> torch.Tensor:
        return torch.randint(3, vocab - 10, (n,), generator=g)

    image = torch.cat([torch.tensor([1]), text(3), torch.full((n_img,), cfg.image_token_id), text(17)])
    image_labels = torch.cat([torch.full((len(image) - 9,), -100), image[-9:]])
    turns = torch.cat([torch.tensor([1]), text(20)])
    turns_labels = turns.clone()
    turns_labels[:6], turns_labels[10:15] = -100, -100
    silent = torch.cat([torch.tensor([1]), text(12)])
    return [image, turns, silent], [image_labels, turns_labels, torch.full_like(silent, -100)]


def _pixels(model) -> torch.Tensor:
    size = model.config.vision_config.image_size
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))


def _padded(ids: list[torch.Tensor], labels: list[torch.Tensor]) -> dict:
    width = max(len(x) for x in ids)
    batch = {"input_ids": torch.zeros(len(ids), width, dtype=torch.long),
             "labels": torch.full((len(ids), width), -100), "attention_mask": torch.zeros(len(ids), width, dtype=torch.long)}
    for r, (i, lab) in enumerate(zip(ids, labels)):
        batch["input_ids"][r, :len(i)], batch["labels"][r, :len(i)], batch["attention_mask"][r, :len(i)] = i, lab, 1
    return batch


def _loss_and_grads(model, batch, last_layer: LastLayerRows | None):
    model.zero_grad(set_to_none=True)
    rows = last_layer.rows_only(supervised_rows(batch["labels"])) if last_layer else torch.enable_grad()
    packed = None
    if "position_ids" in batch:  # the boundaries from the host batch, the query rows for the last layer
        packed = packed_rows(batch["position_ids"].cpu(), batch["labels"].cpu() if last_layer else None)
        packed = packed.to(batch["input_ids"].device)
    with rows:
        loss, _ = supervised_loss_sum(model, batch, packed)
        loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("layout", ["packed", "padded"])
@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_loss_and_gradients_equal_the_full_computation(tiny_llava_dir, layout, checkpointing, device):
    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir, dtype=torch.float32).to(device)
    model.config.text_config.use_cache = False
    model.train()
    ids, labels = _samples(model)
    if layout == "packed":  # two rows: image + two-turn sample, then the silent sample
        assert use_packed_attention(model)
        batch = pack_rows(ids, labels, [[0, 1], [2]], pad_token_id=0)
    else:
        batch = _padded(ids, labels)
    batch["pixel_values"] = _pixels(model)
    batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ref_loss, ref_grads = _loss_and_grads(model, batch, None)
    last_layer = LastLayerRows(model)
    assert last_layer.enabled and len(last_layer.modules) == 3  # q_proj, o_proj, mlp
    loss, grads = _loss_and_grads(model, batch, last_layer)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_outside_a_training_step_the_model_is_unchanged(tiny_llava_dir):
    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir, dtype=torch.float32)
    ids, _ = _samples(model)
    inputs = {"input_ids": ids[0][None], "pixel_values": _pixels(model)}
    with torch.no_grad():
        before = model(**inputs).logits
        last_layer = LastLayerRows(model)
        with last_layer.rows_only(torch.tensor([3, 4])):
            pass
        after = model(**inputs).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)
