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
