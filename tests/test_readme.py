"""The README shows only commands and options that exist, and no story of how the work went."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from llava15.cli import COMMANDS, build_parser

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _command_lines(text: str) -> list[str]:
    """Every `llava15 …` invocation in the README's fenced code blocks (continuation lines joined)."""
    blocks, current, shell = [], None, False
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current, shell = [], line[3:].strip() in ("", "bash", "sh")
            else:
                blocks += ["\n".join(current)] if shell else []
                current = None
        elif current is not None:
            current.append(line)
    lines = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if re.search(r"(^|\s)(llava15|-m llava15\.cli)\s", line + " "):
                lines.append(line)
    return lines


def _split(line: str) -> tuple[list[str], list[str]]:
    """(the subcommand path, the option names) of one invocation."""
    words = shlex.split(line)
    start = next(i for i, w in enumerate(words) if w in ("llava15", "llava15.cli")) + 1
    path, table = [], COMMANDS
    for word in words[start:]:
        entry = table.get(word) if isinstance(table, dict) else None
        if entry is None:
            break
        path.append(word)
        table = entry[1] if isinstance(entry[1], dict) else None
    options = [w.split("=", 1)[0] for w in words[start + len(path):] if w.startswith("--")]
    return path, options


LINES = _command_lines(README.read_text())


def test_the_readme_shows_commands():
    assert len(LINES) >= 10
    text = README.read_text()
    first = re.search(r"```bash\n(.*?)```", text, flags=re.S)
    assert first.group(1).startswith("make demo") and "make test" in first.group(1)
    assert first.start() < text.index("\n## "), "the README opens with `make demo` and `make test`"


@pytest.mark.parametrize("line", LINES)
def test_each_readme_command_exists_with_its_options(line, capsys):
    path, options = _split(line)
    assert path, f"no llava15 command in {line!r}"
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*path, "--help"])
    assert exit_info.value.code == 0, line
    help_text = capsys.readouterr().out
    for option in options:
        assert re.search(rf"{re.escape(option)}\b", help_text), f"{line!r}: {option} is not an option of {path}"


def test_readme_and_results_tell_no_story_of_the_work():
    for path in [README, REPO / "benchmarks" / "RESULTS.md", REPO / "benchmarks" / "history.md",
                 *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text()
        assert not re.search(r"\bsessions? [0-9]|\bhelper\b", text, flags=re.I), path.name
