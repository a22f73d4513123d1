"""`llava15 demo --ablations`: the no-format data keeps everything but the ablated prompts, and one smoke
run trains the three variants, with the linear variant really linear after stage 2."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from llava15.demo.ablations import VARIANTS, run_ablations, write_noformat_data
from llava15.demo.world import synthesize
from llava15.demo.world.text import IMAGE, MULTIPLE_CHOICE, SHORT_ANSWER


def test_write_noformat_data_drops_only_the_ablated_prompts(tmp_path: Path) -> None:
    world = synthesize(tmp_path / "world", seed=0, n_train=8, n_eval=0)
    src = Path(world["finetune"]["data_path"])
    counts = write_noformat_data(src, tmp_path / "noformat.json")
    before = json.loads(src.read_text(encoding="utf-8"))
    after = json.loads((tmp_path / "noformat.json").read_text(encoding="utf-8"))

    assert counts["records"] == len(before) == len(after)
    assert counts["prompts_removed"] > 0
    removed = 0
    for old, new in zip(before, after):
        assert (new["id"], new.get("image")) == (old["id"], old.get("image"))
        assert len(new["conversations"]) == len(old["conversations"])
        for t_old, t_new in zip(old["conversations"], new["conversations"]):
            assert t_new["from"] == t_old["from"]
            assert t_new["value"].count(IMAGE) == t_old["value"].count(IMAGE)
            if t_old["from"] == "gpt":
                assert t_new["value"] == t_old["value"]
                continue
            assert SHORT_ANSWER not in t_new["value"] and MULTIPLE_CHOICE not in t_new["value"]
            kept = [line for line in t_old["value"].split("\n") if line not in (SHORT_ANSWER, MULTIPLE_CHOICE)]
            assert t_new["value"] == "\n".join(kept)
            removed += t_old["value"].count(SHORT_ANSWER) + t_old["value"].count(MULTIPLE_CHOICE)
    assert removed == counts["prompts_removed"]


def _projector_weights(checkpoint: Path) -> dict:
    from safetensors.torch import load_file

    state: dict = {}
    for f in sorted(checkpoint.glob("*.safetensors")):
        state.update({k: v for k, v in load_file(str(f)).items() if "multi_modal_projector." in k})
    return state


def test_ablations_smoke_writes_three_variants(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    assert run_ablations(argparse.Namespace(out=str(tmp_path), seed=0, smoke=True)) == 0
    root = tmp_path / "ablations"
    summary = json.loads((root / "ablations.json").read_text())
    assert summary["smoke"] is True and summary["seconds"] > 0
    assert set(summary["variants"]) == {v.name for v in VARIANTS} == {"mlp_format", "linear_format",
                                                                        "mlp_noformat"}
    for name, r in summary["variants"].items():
        # vqa/pope are None when a benchmark gives no score (demo._metric); compliance is always a float
        for key in ("vqa_accuracy", "pope_f1"):
            assert r[key] is None or (isinstance(r[key], float) and 0.0 <= r[key] <= 1.0), (name, key, r[key])
        assert isinstance(r["format_compliance"], float) and 0.0 <= r["format_compliance"] <= 1.0
        assert (Path(r["checkpoint"]) / "llava15.json").exists() and r["description"]
    assert (root / "ablations.md").read_text().count("\n| ") >= 3
    assert (root / "ablations.png").stat().st_size > 0
    assert "mlp_noformat" in capsys.readouterr().out

    # Stage 1 is shared by the two MLP variants: trained once.
    v = summary["variants"]
    assert v["mlp_noformat"]["stage1"] == v["mlp_format"]["stage1"] != v["linear_format"]["stage1"]
    assert not (root / "mlp_noformat" / "stage1").exists()
    assert Path(summary["noformat_data"]["path"]).exists() and summary["noformat_data"]["prompts_removed"] > 0

    # The projector type lives in the checkpoint config: linear = identity activation + frozen identity
    # linear_2 (llava15.model.build); stage 2, loaded through model.init_checkpoint, must keep both.
    for name, act in (("linear_format", "linear"), ("mlp_format", "gelu"), ("mlp_noformat", "gelu")):
        checkpoint = Path(v[name]["checkpoint"])
        assert json.loads((checkpoint / "config.json").read_text())["projector_hidden_act"] == act, name
        recipe = json.loads((checkpoint / "llava15.json").read_text())["recipe"]
        assert recipe["model"]["projector"] == ("linear" if act == "linear" else "mlp2x_gelu")
    linear_2 = _projector_weights(Path(v["linear_format"]["checkpoint"]))["multi_modal_projector.linear_2.weight"]
    assert torch.equal(linear_2, torch.eye(linear_2.shape[0], dtype=linear_2.dtype))
    mlp_2 = _projector_weights(Path(v["mlp_format"]["checkpoint"]))["multi_modal_projector.linear_2.weight"]
    assert not torch.equal(mlp_2, torch.eye(mlp_2.shape[0], dtype=mlp_2.dtype))
