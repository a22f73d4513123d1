"""LoRA: paper settings, adapter + projector saved, reload and merge give the unmerged logits."""

from __future__ import annotations

import json

import torch

from llava15.model.freeze import component_of
from llava15.model.load import load_bundle
from llava15.model.lora import NON_LORA_FILE, apply_lora, load_lora, merge_lora, save_lora


def test_lora_save_load_merge_matches_unmerged(tiny_llava_dir, tmp_path):
    bundle = load_bundle(tiny_llava_dir)
    model = apply_lora(bundle.model)
    cfg = model.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (128, 256, 0.05)
    wrapped = {n.rsplit(".", 1)[0] for n, _ in model.named_parameters() if "lora_A" in n}
    layers = bundle.model.config.text_config.num_hidden_layers
    leaves = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert len(wrapped) == layers * len(leaves)
    assert all(".model.language_model.layers." in n for n in wrapped)
    assert {component_of(n) for n, p in model.named_parameters() if p.requires_grad} == {
        "lora", "multi_modal_projector"}

    torch.manual_seed(0)
    with torch.no_grad():  # make the adapters and the projector differ from the base
        for n, p in model.named_parameters():
            if "lora_B" in n or "multi_modal_projector" in n:
                p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    ids = torch.tensor([[1, 7, 9] + [bundle.image_token_id] * bundle.num_image_tokens + [11, 12, 13]])
    pixels = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        unmerged = model(input_ids=ids, pixel_values=pixels).logits
        base = load_bundle(tiny_llava_dir).model(input_ids=ids, pixel_values=pixels).logits
    assert (unmerged - base).abs().max() > 1e-3  # the adapter matters

    adapter = save_lora(model, tmp_path / "adapter", base=tiny_llava_dir, template=bundle.template,
                        image=bundle.image)
    saved = json.loads((adapter / "llava15.json").read_text())
    assert saved["base"] == str(tiny_llava_dir) and (adapter / NON_LORA_FILE).exists()
    reloaded, _ = load_lora(adapter)
    merged_dir = merge_lora(adapter, tmp_path / "merged")
    merged = load_bundle(merged_dir)
    assert merged.template == bundle.template
    with torch.no_grad():
        again = reloaded(input_ids=ids, pixel_values=pixels).logits
        out = merged.model(input_ids=ids, pixel_values=pixels).logits
    assert (again - unmerged).abs().max() <= 1e-5
    assert (out - unmerged).abs().max() <= 1e-4
