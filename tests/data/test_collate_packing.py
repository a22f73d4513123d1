"""Collate and packing on a tiny real LLaVA: packed forward equals per-sample forward (eager, sdpa)."""

from __future__ import annotations

import pytest
import torch
from data_spec import IMAGE_ID, to_ours
from PIL import Image

from llava15.data import Collator, expand_image_tokens, preprocess_image
from llava15.data.conversation import Conversation, Message
from llava15.data.packing import plan_rows
from llava15.data.tokenization import IGNORE_INDEX, encode_conversation


def test_expand_image_tokens():
    ids, labels = expand_image_tokens([1, 9, 5, 9, 6], [-100, -100, 5, -100, 6], 9, 3)
    assert ids.tolist() == [1, 9, 9, 9, 5, 9, 9, 9, 6]
    assert labels.tolist() == [-100, -100, -100, -100, 5, -100, -100, -100, 6]


def test_plan_rows_fits_budget_and_is_deterministic():
    lengths = [5, 9, 3, 7, 2, 8]
    rows = plan_rows(lengths, 10)
    assert sorted(i for r in rows for i in r) == list(range(6))
    assert all(sum(lengths[i] for i in r) <= 10 for r in rows) and rows == plan_rows(lengths, 10)
    with pytest.raises(ValueError, match="budget"):
        plan_rows([11], 10)


@pytest.fixture(scope="module")
def bundle(tiny_llava_dir):
    from llava15.model.load import load_bundle

    return load_bundle(tiny_llava_dir)


def _samples(bundle):
    tok, size = bundle.tokenizer, bundle.image.size
    gen = torch.Generator().manual_seed(0)

    def pix(n):
        return torch.stack([preprocess_image(Image.fromarray(
            (torch.rand(size + 3, size, 3, generator=gen) * 255).byte().numpy()), "pad", size) for _ in range(n)])

    convs = [
        (Conversation("a", [Message("user", "<image>\nWhat is in the image?"),
                            Message("assistant", "A red circle.")], ["x"]), pix(1)),
        (Conversation("b", [Message("user", "How many shapes are there?"), Message("assistant", "There are 3."),
                            Message("user", "Colors?"), Message("assistant", "Red and blue.")], []), None),
        (Conversation("c", [Message("user", "<image>\n<image>\nWhere is the circle?"),
                            Message("assistant", "In the middle.")], ["x", "y"]), pix(2)),
    ]
    out = []
    for conv, pixels in convs:
        enc = encode_conversation(conv, tok, bundle.template, bundle.image_token_id)
        out.append({"id": conv.id, "input_ids": torch.tensor(enc.input_ids), "labels": torch.tensor(enc.labels),
                    "pixel_values": pixels})
    return out


def _collator(bundle, mode, side="right"):
    return Collator(bundle.tokenizer.pad_token_id, bundle.image_token_id, bundle.num_image_tokens, mode=mode,
                    padding_side=side, pack_tokens=4096, image_size=bundle.image.size)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_and_padded_forward_equal_per_sample(bundle, attn):
    model = bundle.model.eval()
    model.set_attn_implementation(attn)
    samples = _samples(bundle)
    with torch.no_grad():
        single = []
        for s in samples:
            ids, _ = expand_image_tokens(s["input_ids"], s["labels"], bundle.image_token_id, bundle.num_image_tokens)
            single.append(model(input_ids=ids[None], pixel_values=s["pixel_values"], use_cache=False).logits[0])
        packed = _collator(bundle, "pack")(samples)
        assert "attention_mask" not in packed and packed["input_ids"].shape[0] == 1
        assert packed["pixel_values"].shape[0] == 3
        logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                       pixel_values=packed["pixel_values"], use_cache=False).logits[0]
        at = 0
        for sid, ref in zip(packed["ids"], [single[ord(i) - ord("a")] for i in packed["ids"]]):
            assert (logits[at:at + len(ref)] - ref).abs().max() <= 1e-5, sid
            at += len(ref)
        for side in ("right", "left"):
            padded = _collator(bundle, "pad", side)(samples)
            out = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"],
                        pixel_values=padded["pixel_values"], use_cache=False).logits
            for r, ref in enumerate(single):
                row = out[r][padded["attention_mask"][r].bool()]
                assert (row - ref).abs().max() <= 1e-4, (side, r)


def test_collate_labels_and_text_only_batch(bundle):
    samples = _samples(bundle)
    batch = _collator(bundle, "pad")([samples[1]])
    assert batch["pixel_values"] is None and batch["attention_mask"].all()
    batch = _collator(bundle, "pad")(samples)
    image_pos = batch["input_ids"] == bundle.image_token_id
    assert int(image_pos.sum()) == 3 * bundle.num_image_tokens
    assert (batch["labels"][image_pos] == IGNORE_INDEX).all()
    from llava15.data.tokenization import supervised_fraction

    frac = supervised_fraction(batch["labels"], batch["attention_mask"])
    assert 0 < frac < 0.5


def test_splice_layout_like_original(official):
    """Right/left padding and the cut at 620 of the original's mixed batch (training.md §2.5, splice)."""
    recs = {r["id"]: r["vicuna_v1"] for r in official("masking")["records"]}
    samples = [{"id": k, "input_ids": torch.tensor(to_ours(recs[k]["input_ids"])),
                "labels": torch.tensor([IGNORE_INDEX if x == -200 else x for x in recs[k]["labels"]]),
                "pixel_values": None if k == "text_only_multi_turn" else torch.zeros(1, 3, 4, 4)}
               for k in ("single_turn_image", "text_only_multi_turn", "numeric_answer")]
    batch = Collator(0, IMAGE_ID, 576)(samples)
    row = batch["input_ids"][0]
    assert (row[:35] != IMAGE_ID).all() and (row[35:611] == IMAGE_ID).all()
    assert int(batch["attention_mask"][0].sum()) == 35 + 576 + 46
    assert int(batch["attention_mask"][1].sum()) == 125 and batch["pixel_values"].shape[0] == 2
    left = Collator(0, IMAGE_ID, 576, padding_side="left")(samples)
    assert left["attention_mask"][1, -1] == 1 and left["attention_mask"][1, 0] == 0
    cut = Collator(0, IMAGE_ID, 576, max_length=620)(samples)
    assert cut["input_ids"].shape[1] == 620 and torch.equal(cut["labels"][0], batch["labels"][0, :620])
    with pytest.raises(ValueError, match="split an image"):
        Collator(0, IMAGE_ID, 576, max_length=300)(samples)
