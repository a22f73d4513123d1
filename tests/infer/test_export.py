"""`llava15 export --to vllm`: the written folder is the layout vLLM serves, and damage is reported."""

from __future__ import annotations

import json

from llava15.cli import main
from llava15.infer.export import validate_vllm_layout


def test_export_from_the_original_layout_validates_and_prints_the_command(tiny_original_dir, tmp_path, capsys):
    dst = tmp_path / "vllm"
    status = main(["export", "--to", "vllm", str(tiny_original_dir), str(dst)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "vllm serve " + str(dst.resolve()) in out
    assert "one extra '▁' token after every image" in out
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["text_config"]["architectures"] == ["LlamaForCausalLM"]
    assert (dst / "chat_template.jinja").exists() and (dst / "preprocessor_config.json").exists()
    assert validate_vllm_layout(dst) == []


def test_validation_names_what_vllm_would_trip_on(tiny_llava_dir, tmp_path):
    import shutil

    dst = tmp_path / "broken"
    shutil.copytree(tiny_llava_dir, dst)
    (dst / "chat_template.jinja").unlink()
    cfg = json.loads((dst / "config.json").read_text())
    del cfg["text_config"]["architectures"]
    (dst / "config.json").write_text(json.dumps(cfg))
    problems = "\n".join(validate_vllm_layout(dst))
    assert "text_config.architectures" in problems and "chat_template" in problems

    shutil.rmtree(dst)
    shutil.copytree(tiny_llava_dir, dst)
    proc = json.loads((dst / "processor_config.json").read_text())
    proc["num_additional_image_tokens"] = 0  # the llava-hf default that yields one token too few
    (dst / "processor_config.json").write_text(json.dumps(proc))
    problems = "\n".join(validate_vllm_layout(dst))
    assert "expands <image> into" in problems, problems
