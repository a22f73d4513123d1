"""`llava15 eval report`: Table 2 layout with the paper's numbers, settings/versions, PNG chart."""

from __future__ import annotations

import json

from llava15.cli import main
from llava15.eval.report import PAPER, environment


def test_report_from_scores_files(tmp_path, capsys):
    scores = tmp_path / "pope_scores.json"
    scores.write_text(json.dumps({"benchmark": "pope", "status": "scored", "value": 85.947, "metrics": {},
                                  "files": {}, "notes": [], "settings": {"model": "tiny"}}))  # fmt: skip
    run = tmp_path / "run_scores.json"
    run.write_text(json.dumps({"results": {
        "mmvet": {"benchmark": "mmvet", "status": "skipped", "value": None, "metrics": {}, "notes": ["needs a judge"]},
        "vqav2": {"benchmark": "vqav2", "status": "submission", "value": None, "metrics": {},
                  "files": {"submission": "x.json"}}}, "settings": {"batch_size": 8}}))  # fmt: skip
    out = tmp_path / "report"
    assert main(["eval", "report", str(scores), str(run), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    lines = md.splitlines()
    head = next(line for line in lines if line.startswith("| Model |"))
    assert head.split(" | ")[1:4] == ["VQAv2", "GQA", "VizWiz"]
    row13 = next(line for line in lines if line.startswith("| LLaVA-1.5-13B (paper)"))
    assert "1531.3" in row13 and "85.9" in row13
    ours = next(line for line in lines if line.startswith("| **"))
    cells = [c.strip() for c in ours.strip("|").split("|")]
    assert cells[1] == "server" and cells[6] == "85.9" and cells[12] == "skipped"  # never a 0
    data = json.loads((out / "report.json").read_text())
    assert {k: data["table2"]["pope"][k] for k in ("ours", "status", "paper_7b", "paper_13b")} == {
        "ours": 85.947, "status": "scored", "paper_7b": 85.9, "paper_13b": 85.9}
    assert data["settings"]["batch_size"] == 8 and data["settings"]["environment"]["packages"]["torch"]
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "report.md" in capsys.readouterr().out


def test_paper_numbers_and_environment():
    assert PAPER["13b"]["mme"] == 1531.3 and PAPER["7b"]["mmbench_cn"] == 58.3 and len(PAPER["7b"]) == 12
    env = environment()
    assert env["python"] and "transformers" in env["packages"]
