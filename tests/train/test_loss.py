"""The supervised-positions loss equals HF's full-vocabulary loss, padded or packed."""

from __future__ import annotations

import torch

from llava15.train.loss import full_vocab_loss, shift_targets, supervised_loss_sum
from tests.train.conftest import packed_batch, padded_batch, tiny_llava


def test_shift_targets_moves_labels_left() -> None:
    labels = torch.tensor([[-100, 5, 6, -100]])
    assert shift_targets(labels).tolist() == [[5, 6, -100, -100]]


def test_loss_equals_full_vocab_loss_padded(samples) -> None:
    model = tiny_llava()
    batch = padded_batch(samples, n_images=2)
    total, count = supervised_loss_sum(model, batch)
    reference = full_vocab_loss(model, batch)
    assert count == 5 + 9 + 3  # every answer token is predicted by the token before it
    torch.testing.assert_close(total / count, reference, atol=1e-5, rtol=0)


def test_loss_equals_full_vocab_loss_packed_and_padded(samples) -> None:
    model = tiny_llava()
    packed_total, packed_count = supervised_loss_sum(model, packed_batch(samples, n_images=2))
    reference = full_vocab_loss(model, padded_batch(samples, n_images=2))
    torch.testing.assert_close(packed_total / packed_count, reference, atol=1e-5, rtol=0)


def test_gradients_match_full_vocab_loss(samples) -> None:
    model = tiny_llava()
    batch = padded_batch(samples, n_images=2)
    total, count = supervised_loss_sum(model, batch)
    (total / count).backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    full_vocab_loss(model, batch).backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(ours[name], p.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_the_runners_step_equals_full_vocab_loss(samples) -> None:
    """As `llava15 train` computes it by default: one packed row under the packed attention, the last
    decoder layer on supervised rows only; the loss and gradients of HF's full-vocabulary loss."""
    from llava15.model.last_layer_rows import LastLayerRows
    from llava15.model.packed_attention import packed_rows, use_packed_attention
    from llava15.train.loss import supervised_rows

    model = tiny_llava()
    padded = padded_batch(samples, n_images=2)
    reference = full_vocab_loss(model, padded)
    reference.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    assert use_packed_attention(model)
    packed = packed_batch(samples, n_images=2)
    with LastLayerRows(model).rows_only(supervised_rows(packed["labels"])):
        total, count = supervised_loss_sum(model, packed, packed_rows(packed["position_ids"], packed["labels"]))
        (total / count).backward()
    torch.testing.assert_close(total.detach() / count, reference.detach(), atol=1e-5, rtol=0)
    for name, grad in want.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, atol=1e-6, rtol=1e-4, msg=name)
