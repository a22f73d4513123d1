"""The command line: every subcommand's --help works, and importing llava15 stays light."""

import subprocess
import sys

import pytest

from llava15.cli import COMMANDS, build_parser


def _leaf_commands(table, prefix=()):
    for name, entry in table.items():
        if isinstance(entry[1], dict):
            yield from _leaf_commands(entry[1], prefix + (name,))
        else:
            yield prefix + (name,)


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("command", list(_leaf_commands(COMMANDS)), ids=" ".join)
def test_every_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: llava15 " + " ".join(command) in capsys.readouterr().out


def test_every_command_target_module_exists():
    import importlib.util

    def targets(table):
        for entry in table.values():
            if isinstance(entry[1], dict):
                yield from targets(entry[1])
            else:
                yield entry[2]

    for target in targets(COMMANDS):
        module, func = target.split(":")
        assert importlib.util.find_spec(module) is not None, f"{target}: module missing"


def test_console_script_help_runs_in_a_fresh_process():
    out = subprocess.run([sys.executable, "-m", "llava15.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "train" in out and "serve" in out


def test_import_llava15_is_light():
    code = ("import sys, llava15, llava15.cli; "
            "heavy = [m for m in ('torch', 'transformers', 'fastapi', 'uvicorn', 'peft', 'tensorboard') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
