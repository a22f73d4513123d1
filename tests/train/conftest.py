"""Shared fixtures for the training tests: a tiny in-memory LLaVA and hand-made batches."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

IMAGE_TOKEN = 60
N_IMG = 4  # 16 px images, patch 8 → 2×2 = 4 features


def tiny_llava(seed: int = 0) -> LlavaForConditionalGeneration:
    torch.manual_seed(seed)
    vision = CLIPVisionConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=32)
    text = LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=4, intermediate_size=64, max_position_embeddings=256)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN,
                      vision_feature_layer=-2, vision_feature_select_strategy="default")
    return LlavaForConditionalGeneration(cfg).float()


def make_sample(gen: torch.Generator, n_text: int, with_image: bool) -> tuple[list[int], list[int]]:
    prompt = [1] + ([IMAGE_TOKEN] * N_IMG if with_image else []) + \
        torch.randint(2, 50, (3,), generator=gen).tolist()
    answer = torch.randint(2, 50, (n_text,), generator=gen).tolist()
    ids = prompt + answer
    labels = [-100] * len(prompt) + answer
    return ids, labels


def padded_batch(samples: list[tuple[list[int], list[int]]], n_images: int) -> dict:
    width = max(len(ids) for ids, _ in samples)
    ids = torch.zeros(len(samples), width, dtype=torch.long)
    labels = torch.full((len(samples), width), -100)
    mask = torch.zeros(len(samples), width, dtype=torch.long)
    for r, (i, lab) in enumerate(samples):
        ids[r, :len(i)] = torch.tensor(i)
        labels[r, :len(lab)] = torch.tensor(lab)
        mask[r, :len(i)] = 1
    pixels = torch.randn(n_images, 3, 16, 16, generator=torch.Generator().manual_seed(1)) if n_images else None
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "pixel_values": pixels}


def packed_batch(samples: list[tuple[list[int], list[int]]], n_images: int) -> dict:
    ids = torch.tensor([sum((s[0] for s in samples), [])])
    labels = torch.tensor([sum((s[1] for s in samples), [])])
    pos = torch.tensor([sum((list(range(len(s[0]))) for s in samples), [])])
    pixels = torch.randn(n_images, 3, 16, 16, generator=torch.Generator().manual_seed(1)) if n_images else None
    return {"input_ids": ids, "labels": labels, "position_ids": pos, "pixel_values": pixels}


@pytest.fixture
def samples() -> list[tuple[list[int], list[int]]]:
    gen = torch.Generator().manual_seed(0)
    return [make_sample(gen, 5, True), make_sample(gen, 9, False), make_sample(gen, 3, True)]


# --- on-disk tiny models and data for runner tests ---------------------------------------------------

COLORS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (230, 220, 40),
          "purple": (140, 40, 170), "orange": (240, 140, 20)}
SHAPES = ["circle", "square", "triangle", "star"]


@pytest.fixture(scope="session")
def tiny_sources(tmp_path_factory) -> dict:
    """Tiny CLIP + tiny Llama folders (the recipe's model.vision_tower / model.llm)."""
    from llava15.testing import make_tiny_clip, make_tiny_llama

    root = tmp_path_factory.mktemp("sources")
    return {"clip": str(make_tiny_clip(root / "clip")), "llama": str(make_tiny_llama(root / "llama"))}


def write_dataset(root, n: int = 8, text_only: int = 2) -> dict:
    """`n` image records (a coloured shape each) + `text_only` text records, LLaVA JSON format."""
    import json
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    names = list(COLORS)
    for i in range(n):
        color, shape = names[i % len(names)], SHAPES[i % len(SHAPES)]
        img = Image.new("RGB", (40 + 4 * i, 56), (255, 255, 255))
        img.paste(Image.new("RGB", (20, 20), COLORS[color]), (5 + i, 10 + 2 * i))
        img.save(root / "images" / f"{i}.png")
        records.append({"id": f"img{i}", "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat is in the image?"},
            {"from": "gpt", "value": f"A {color} {shape} on a white background."}]})
    for j in range(text_only):
        records.append({"id": f"txt{j}", "conversations": [
            {"from": "human", "value": "What is the capital of France?"},
            {"from": "gpt", "value": f"The capital of France is Paris. {j + 1} apples."}]})
    (root / "data.json").write_text(json.dumps(records))
    return {"path": str(root / "data.json"), "image_folder": str(root / "images")}


def tiny_overrides(sources: dict, data: dict, out, **extra) -> list[str]:
    items = {"model.vision_tower": sources["clip"], "model.llm": sources["llama"], "data.path": data["path"],
             "data.image_folder": data["image_folder"], "train.output_dir": str(out), **extra}
    return [f"{k}={v}" for k, v in items.items()]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (and leave the other core to the rest of the suite)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
TINY_RECIPE = REPO / "recipes" / "tiny_cpu.yaml"


def subprocess_env() -> dict:
    import os

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def read_losses(out) -> list[float]:
    import json
    from pathlib import Path

    return [json.loads(line)["loss"] for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def read_weights(folder) -> dict:
    from pathlib import Path

    from safetensors.torch import load_file

    tensors = {}
    for f in sorted(Path(folder).glob("model*.safetensors")):
        tensors.update(load_file(f))
    return tensors
