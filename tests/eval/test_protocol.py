"""``--protocol official``: the original scripts' decoding (one question at a time through
``model.generate`` in half precision, ``batch_decode(skip_special_tokens=True)[0].strip()``, ScienceQA's
palette image padded before its RGB conversion), recorded in the scores; a run folder never mixes
protocols."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, LlavaForConditionalGeneration

from llava15.cli import main
from llava15.data.conversation import Message
from llava15.data.images import preprocess_image
from llava15.eval.benchmarks import get_benchmark
from llava15.infer.engine import load_generation_bundle
from tests.eval.test_deviations import _palette_image
from tests.eval.test_hub_data import official_root

NEW_TOKENS = 5


def _data(tmp_path: Path) -> Path:
    root = official_root(tmp_path / "data")
    sqa = root / "playground" / "data" / "eval" / "scienceqa"
    (sqa / "images" / "test" / "7").mkdir(parents=True)
    _palette_image().save(sqa / "images" / "test" / "7" / "image.png")
    (sqa / "llava_test_CQM-A.json").write_text(json.dumps([
        {"id": "7", "image": "7/image.png", "conversations": [
            {"from": "human", "value": "<image>\nWhich colour?\nA. red\nB. green"}, {"from": "gpt", "value": "A"}]},
        {"id": "9", "conversations": [{"from": "human", "value": "Which is a fruit?\nA. apple\nB. rock"},
                                      {"from": "gpt", "value": "A"}]}]))  # fmt: skip
    return root


def _reference(model_dir: Path, root: Path, benches: tuple[str, ...]) -> dict[str, list[str]]:
    """The original loop, written out: float16, batch 1, generate, batch_decode()[0].strip()."""
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float16)
    tok = AutoTokenizer.from_pretrained(model_dir)
    engine = load_generation_bundle(model_dir, device="cpu").engine  # prompt ids and image settings only
    return {name: _loop(model, tok, engine, root, name) for name in benches}


def _loop(model, tok, engine, root: Path, bench_name: str) -> list[str]:
    s = engine.bundle.image
    bench = get_benchmark(bench_name)
    out = []
    for q in bench.load(root):
        ids = torch.tensor([engine.prompt_ids([Message("user", q.prompt_text)])])
        kw = {}
        if q.image_path is not None:
            with Image.open(q.image_path) as im:
                im.load()
                if bench_name == "scienceqa" and im.width != im.height:  # model_vqa_science: no convert first
                    side = max(im.size)
                    canvas = Image.new(im.mode, (side, side), (122, 116, 104))
                    canvas.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
                    im = canvas
                image = im.convert("RGB")
            kw["pixel_values"] = preprocess_image(image, "pad", size=s.size, mean=s.mean, std=s.std)[None].half()
        with torch.inference_mode():
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                                 max_new_tokens=NEW_TOKENS, use_cache=True, pad_token_id=engine.pad_id, **kw)
        out.append(tok.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)[0].strip())
    return out


def test_official_protocol_decodes_like_the_original_and_is_recorded(tiny_llava_dir, tmp_path, capsys):
    root = _data(tmp_path)
    out = tmp_path / "official"
    args = ["eval", "run", "--model", str(tiny_llava_dir), "--benchmarks", "pope,scienceqa", "--data-root", str(root),
            "--out", str(out), "--device", "cpu", "--max-new-tokens", str(NEW_TOKENS), "--batch-size", "8"]
    assert main([*args, "--protocol", "official"]) == 0
    settings = json.loads((out / "scores.json").read_text())["settings"]
    assert (settings["protocol"], settings["batch_size"], settings["dtype"]) == ("official", 1, "torch.float16")
    reference = _reference(tiny_llava_dir, root, ("pope", "scienceqa"))
    for bench in ("pope", "scienceqa"):
        texts = [json.loads(x)["text"] for x in (out / bench / "answers.jsonl").read_text().splitlines()]
        assert texts == reference[bench], bench
    sqa = json.loads((out / "scienceqa" / "scores.json").read_text())
    assert sqa["protocol"] == "official" and sqa["images_padding_order_sensitive"] == {"P": 1}
    assert any("padded in their own mode" in n for n in sqa["notes"])
    assert "Protocol: **official**" in (out / "report.md").read_text()

    # the same folder is never resumed under the other protocol
    assert main([*args, "--protocol", "fast"]) == 2
    # ... nor with other weights (a retrained checkpoint): its answers are left as they are
    retrained = tmp_path / "retrained"
    shutil.copytree(tiny_llava_dir, retrained)
    weights = next(retrained.glob("*.safetensors"))
    tensors = load_file(str(weights))
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1
    save_file(tensors, str(weights), metadata={"format": "pt"})
    answers = (out / "pope" / "answers.jsonl").read_text()
    assert main([*args[:3], str(retrained), *args[4:], "--protocol", "official"]) == 2
    assert "holds answers of other weights" in capsys.readouterr().err
    assert (out / "pope" / "answers.jsonl").read_text() == answers
    assert main([*args, "--protocol", "official"]) == 0  # the same weights resume (nothing left to answer)
    fast = tmp_path / "fast"
    assert main(["eval", "run", "--model", str(tiny_llava_dir), "--benchmarks", "scienceqa", "--data-root", str(root),
                 "--out", str(fast), "--device", "cpu", "--max-new-tokens", str(NEW_TOKENS)]) == 0  # default: fast
    sqa = json.loads((fast / "scienceqa" / "scores.json").read_text())
    assert sqa["protocol"] == "fast" and any("converted to RGB first" in n for n in sqa["notes"])
