"""A model assembled by llava15 and saved loads in plain transformers exactly as through load_bundle."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import AutoProcessor, AutoTokenizer, LlavaForConditionalGeneration

from llava15.data.images import ImageSettings
from llava15.model.build import build_llava
from llava15.model.load import load_bundle
from llava15.model.save import save_checkpoint
from llava15.testing import make_tiny_clip, make_tiny_llama

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
          "helpful, detailed, and polite answers to the user's questions.")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("built")
    clip, llama = make_tiny_clip(tmp / "clip"), make_tiny_llama(tmp / "llama")
    torch.manual_seed(0)
    model, tok, image = build_llava(str(clip), str(llama))
    out = save_checkpoint(model, tok, tmp / "ckpt", template="vicuna_v1", image=image,
                          recipe={"train": {"lr": 2e-5}})
    return model, tok, image, out, llama


def _image(seed: int = 0) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(40, 70, 3) * 255).astype("uint8"))


def _messages() -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}]


def _inputs(folder: Path) -> dict:
    processor = AutoProcessor.from_pretrained(folder)
    msgs = _messages()
    msgs[0]["content"][0]["image"] = _image()
    return processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         return_tensors="pt")


def test_plain_transformers_matches_load_bundle_and_built_model(built):
    model, _, _, folder, _ = built
    plain, info = LlavaForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    plain.eval()
    bundle = load_bundle(folder)
    inputs = _inputs(folder)
    assert int((inputs["input_ids"] == bundle.image_token_id).sum()) == bundle.num_image_tokens == 16
    with torch.no_grad():
        ref = plain(**inputs).logits
        assert (bundle.model(**inputs).logits - ref).abs().max() <= 1e-5
        assert (model(**inputs).logits - ref).abs().max() <= 1e-5
    kw = dict(max_new_tokens=8, do_sample=False, min_new_tokens=8)
    assert torch.equal(plain.generate(**inputs, **kw), bundle.model.generate(**inputs, **kw))


def test_saved_key_names_are_canonical_4x_layout(built):
    folder = built[3]
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert f.metadata() == {"format": "pt"}
    prefixes = ("language_model.model.", "multi_modal_projector.linear_1.", "multi_modal_projector.linear_2.",
                "vision_tower.vision_model.")
    assert all(k.startswith(prefixes) or k == "language_model.lm_head.weight" for k in keys), keys
    assert "language_model.lm_head.weight" in keys
    assert any(k.startswith("vision_tower.vision_model.encoder.layers.") for k in keys)
    config = json.loads((folder / "config.json").read_text())
    assert config["text_config"]["architectures"] == ["LlamaForCausalLM"]
    assert config["text_config"]["rope_theta"] == 10000.0  # read by transformers 4.x / vLLM
    processor = json.loads((folder / "processor_config.json").read_text())
    assert processor["num_additional_image_tokens"] == 1 and processor["patch_size"] == 14
    assert json.loads((folder / "preprocessor_config.json").read_text())["do_pad"] is True
    assert (folder / "tokenizer.model").is_file()


def test_checkpoint_is_self_describing(built):
    _, tok, image, folder, _ = built
    meta = json.loads((folder / "llava15.json").read_text())
    assert meta["template"] == "vicuna_v1" and meta["recipe"] == {"train": {"lr": 2e-5}}
    assert meta["image"]["aspect_ratio"] == "pad" and meta["image"]["size"] == 56
    # The folder name says nothing; a renamed copy loads the same template.
    renamed = folder.parent / "llava-plain-template-v0"
    shutil.copytree(folder, renamed)
    bundle = load_bundle(renamed)
    assert bundle.template == "vicuna_v1"
    assert bundle.image == image
    assert bundle.image_token_id == tok.convert_tokens_to_ids("<image>") == bundle.model.config.image_token_id


def test_chat_template_renders_vicuna_v1_with_eos_after_answers(built):
    folder = built[3]
    tok = AutoTokenizer.from_pretrained(folder)
    msgs = [{"role": "user", "content": "<image>\nWhat is in the image?"},
            {"role": "assistant", "content": "A cat."}, {"role": "user", "content": "Color?"}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == (f"<s>{SYSTEM} USER: <image>\nWhat is in the image? ASSISTANT: A cat.</s>"
                    "USER: Color? ASSISTANT:")
    ids = _inputs(folder)["input_ids"][0].tolist()
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id  # exactly one BOS


def test_tokenizer_surgery(built):
    model, tok, _, _, llama = built
    base = AutoTokenizer.from_pretrained(llama)
    assert tok.convert_tokens_to_ids("<image>") == len(base)
    assert tok.pad_token == "<pad>" and tok.pad_token_id == len(base) + 1
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    assert emb.shape[0] % 64 == 0 and emb.shape[0] >= len(tok) == model.config.text_config.vocab_size - (
        emb.shape[0] - len(tok))
    n = len(base)
    torch.testing.assert_close(emb[n:], emb[:n].mean(0).expand(emb.shape[0] - n, -1))
    torch.testing.assert_close(head[n:], head[:n].mean(0).expand(head.shape[0] - n, -1))
    assert model.config.text_config.pad_token_id == tok.pad_token_id


def test_llava_hf_folder_without_metadata_gets_documented_defaults(built, tmp_path, caplog):
    folder = tmp_path / "llava-hf-like"
    shutil.copytree(built[3], folder)
    (folder / "llava15.json").unlink()
    prep = json.loads((folder / "preprocessor_config.json").read_text())
    prep["do_pad"] = False  # llava-hf ships crop, not pad
    (folder / "preprocessor_config.json").write_text(json.dumps(prep))
    with caplog.at_level(logging.WARNING):
        bundle = load_bundle(folder)
    assert bundle.template == "vicuna_v1"
    assert bundle.image == ImageSettings(size=56, aspect_ratio="square")
    assert "llava15.json" in caplog.text


def test_linear_projector_is_a_single_linear_that_plain_transformers_loads(built, tmp_path):
    _, _, _, _, llama = built
    clip = make_tiny_clip(tmp_path / "clip")
    model, tok, image = build_llava(str(clip), str(llama), projector="linear")
    proj = model.model.multi_modal_projector
    x = torch.randn(3, 5, model.config.vision_config.hidden_size)
    with torch.no_grad():
        torch.testing.assert_close(proj(x), proj.linear_1(x), rtol=0, atol=0)
    folder = save_checkpoint(model, tok, tmp_path / "lin", "vicuna_v1", image)
    plain = LlavaForConditionalGeneration.from_pretrained(folder)
    with torch.no_grad():
        torch.testing.assert_close(plain.model.multi_modal_projector(x), proj.linear_1(x), rtol=0, atol=0)


def test_large_checkpoints_are_sharded_with_an_index_transformers_reads(built, tmp_path):
    from llava15.model.format import canonical_state_dict, write_safetensors

    model, _, _, folder, _ = built
    sharded = tmp_path / "sharded"
    shutil.copytree(folder, sharded)
    (sharded / "model.safetensors").unlink()
    names = write_safetensors(canonical_state_dict(model), sharded, max_shard_bytes=200_000)
    assert len(names) > 1 and (sharded / "model.safetensors.index.json").exists()
    bundle = load_bundle(sharded, dtype=torch.bfloat16)
    assert next(bundle.model.parameters()).dtype == torch.bfloat16
    for name, p in model.named_parameters():
        torch.testing.assert_close(bundle.model.get_parameter(name).float(), p.to(torch.bfloat16).float())
