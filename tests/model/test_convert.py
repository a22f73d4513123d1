"""Original LLaVA layout ⇄ HF layout: bit-exact round trips and the original −200 splice forward."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoTokenizer, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from llava15.model.convert import ConversionError, to_hf, to_original
from llava15.model.format import is_original_layout, read_state_dict
from llava15.model.load import load_bundle
from llava15.model.projector import load_projector_init

IMAGE_INDEX = -200  # the original code's image sentinel
PROMPT = "USER: <image>\nWhat is in the image? ASSISTANT:"


def original_ids(tokenizer, prompt: str) -> list[int]:
    """The original `tokenizer_image_token`: chunks tokenized separately, BOS kept once, −200 between."""
    chunks = [tokenizer(c).input_ids for c in prompt.split("<image>")]
    ids = [chunks[0][0]] if chunks[0] and chunks[0][0] == tokenizer.bos_token_id else []
    for i, chunk in enumerate(chunks):
        if i:
            ids.append(IMAGE_INDEX)
        ids.extend(chunk[1:] if chunk and chunk[0] == tokenizer.bos_token_id else chunk)
    return ids


def reference_logits(folder: Path, ids: list[int], pixel_values: torch.Tensor) -> torch.Tensor:
    """LLaVA-1.5's forward, written from training.md §2.2-2.5 with plain torch around HF Llama/CLIP."""
    cfg = json.loads((folder / "config.json").read_text())
    sd = read_state_dict(folder)
    tower = CLIPVisionModel.from_pretrained(cfg["mm_vision_tower"]).eval()
    proj = nn.Sequential(nn.Linear(cfg["mm_hidden_size"], cfg["hidden_size"]), nn.GELU(),
                         nn.Linear(cfg["hidden_size"], cfg["hidden_size"]))
    proj.load_state_dict({k[len("model.mm_projector."):]: v for k, v in sd.items() if "mm_projector" in k})
    text_fields = {k: v for k, v in cfg.items() if not k.startswith("mm_") and k not in (
        "model_type", "architectures", "use_mm_proj", "image_aspect_ratio", "tokenizer_padding_side")}
    llm = LlamaForCausalLM(LlamaConfig(**text_fields)).eval()
    llm.load_state_dict({k: v for k, v in sd.items() if "mm_projector" not in k}, strict=True)
    with torch.no_grad():
        hidden = tower(pixel_values, output_hidden_states=True).hidden_states[cfg["mm_vision_select_layer"]]
        features = proj(hidden[:, 1:])  # 'patch': drop CLS
        cut = ids.index(IMAGE_INDEX)
        embed = llm.get_input_embeddings()
        before = embed(torch.tensor([ids[:cut]]))
        after = embed(torch.tensor([ids[cut + 1:]]))
        spliced = torch.cat([before, features, after], dim=1)
        return llm(inputs_embeds=spliced).logits


@pytest.fixture(scope="module")
def pixel_values() -> torch.Tensor:
    return torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(0))


def test_original_to_hf_to_original_is_bit_exact(tiny_original_dir, tmp_path):
    assert (tiny_original_dir / "pytorch_model.bin").exists()  # released checkpoints are .bin shards
    cli = [sys.executable, "-m", "llava15.cli", "convert", "--to", "hf", str(tiny_original_dir), str(tmp_path / "hf")]
    subprocess.run(cli, check=True, capture_output=True, timeout=300)
    assert not is_original_layout(json.loads((tmp_path / "hf" / "config.json").read_text()))
    to_original(tmp_path / "hf", tmp_path / "back", safetensors=False)
    src, back = read_state_dict(tiny_original_dir), read_state_dict(tmp_path / "back")
    assert sorted(src) == sorted(back)
    assert not any(k.startswith("model.vision_tower") for k in src)  # tower referenced, not stored
    for key, t in src.items():
        assert back[key].dtype == t.dtype and torch.equal(back[key], t), key
    assert json.loads((tmp_path / "back" / "config.json").read_text()) == json.loads(
        (tiny_original_dir / "config.json").read_text())
    assert (tmp_path / "back" / "tokenizer.model").read_bytes() == (tiny_original_dir / "tokenizer.model").read_bytes()


def test_hf_logits_equal_the_original_splice_forward(tiny_original_dir, pixel_values):
    bundle = load_bundle(tiny_original_dir)  # converted in memory
    tok = AutoTokenizer.from_pretrained(tiny_original_dir)  # the original vocabulary, no <image>
    assert "<image>" not in tok.get_vocab()
    ids = original_ids(tok, PROMPT)
    assert ids.count(IMAGE_INDEX) == 1
    ref = reference_logits(tiny_original_dir, ids, pixel_values)
    cut = ids.index(IMAGE_INDEX)
    hf_ids = ids[:cut] + [bundle.image_token_id] * bundle.num_image_tokens + ids[cut + 1:]
    with torch.no_grad():
        out = bundle.model(input_ids=torch.tensor([hf_ids]), pixel_values=pixel_values).logits
    vocab = ref.shape[-1]
    assert out.shape[1] == ref.shape[1]
    assert (out[..., :vocab] - ref).abs().max() <= 1e-5


def test_built_model_to_original_and_back_keeps_logits(tiny_llava_dir, tmp_path, pixel_values):
    to_original(tiny_llava_dir, tmp_path / "orig")
    cfg = json.loads((tmp_path / "orig" / "config.json").read_text())
    assert cfg["model_type"] == "llava_llama" and cfg["mm_projector_type"] == "mlp2x_gelu"
    assert Path(cfg["mm_vision_tower"]).is_dir()  # no tower reference known: shipped alongside
    assert cfg["vocab_size"] == 384 and "<image>" not in AutoTokenizer.from_pretrained(tmp_path / "orig").get_vocab()
    to_hf(tmp_path / "orig", tmp_path / "hf")
    a, b = load_bundle(tiny_llava_dir), load_bundle(tmp_path / "hf")
    ids = torch.tensor([[1, 5, 6] + [a.image_token_id] * a.num_image_tokens + [7, 8]])
    with torch.no_grad():
        la = a.model(input_ids=ids, pixel_values=pixel_values).logits
        lb = b.model(input_ids=ids, pixel_values=pixel_values).logits
    assert torch.equal(la[..., :384], lb[..., :384])


def test_unknown_key_is_reported_not_dropped(tiny_original_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny_original_dir, src)
    sd = read_state_dict(src)
    sd["model.some_adapter.weight"] = torch.zeros(2)
    torch.save(sd, src / "pytorch_model.bin")
    with pytest.raises(ConversionError, match="model.some_adapter.weight"):
        to_hf(src, tmp_path / "hf")


def test_layouts_are_told_apart_by_fields_not_model_type(tiny_llava_dir, tiny_original_dir, tmp_path):
    hf_cfg = json.loads((tiny_llava_dir / "config.json").read_text())
    orig_cfg = json.loads((tiny_original_dir / "config.json").read_text())
    assert hf_cfg["model_type"] == "llava" and not is_original_layout(hf_cfg)
    assert is_original_layout({**orig_cfg, "model_type": "llava"})  # released checkpoints say "llava"
    with pytest.raises(ConversionError, match="not the original LLaVA layout"):
        to_hf(tiny_llava_dir, tmp_path / "x")
    with pytest.raises(ConversionError, match="not an HF LLaVA config"):
        to_original(tiny_original_dir, tmp_path / "y")


def test_load_projector_init_from_stage1_file_and_checkpoint(tiny_original_dir, tiny_llava_dir, tmp_path):
    sd = read_state_dict(tiny_original_dir)
    stage1 = {k: v.to(torch.bfloat16) for k, v in sd.items() if "mm_projector" in k}
    torch.save(stage1, tmp_path / "mm_projector.bin")
    init = load_projector_init(tmp_path / "mm_projector.bin")
    assert sorted(init) == ["linear_1.bias", "linear_1.weight", "linear_2.bias", "linear_2.weight"]
    assert torch.equal(init["linear_2.weight"], stage1["model.mm_projector.2.weight"])
    assert torch.equal(load_projector_init(tmp_path)["linear_1.bias"], stage1["model.mm_projector.0.bias"])
    bundle = load_bundle(tiny_llava_dir)
    bundle.model.model.multi_modal_projector.load_state_dict(load_projector_init(tiny_llava_dir), strict=True)
