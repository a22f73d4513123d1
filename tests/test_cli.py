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


def test_help_shows_defaults_and_the_known_choices(capsys):
    from llava15.cli import benchmark_names, template_names
    from llava15.config import packaged_recipes

    def help_of(*command: str) -> str:
        with pytest.raises(SystemExit):
            build_parser().parse_args([*command, "--help"])
        return " ".join(capsys.readouterr().out.split())

    serve = help_of("serve")
    assert "(default: 8000)" in serve and "(default: 127.0.0.1)" in serve and "LLAVA15_API_KEY" in serve
    assert all(name in help_of("chat") for name in template_names())
    assert all(name in help_of("eval", "run") for name in benchmark_names())
    assert all(name in help_of("train") for name in packaged_recipes())
    assert "--overwrite" in help_of("convert") and "--debug" in help_of("data", "check")


def test_train_list_keys_prints_every_key(capsys):
    from llava15.cli import main

    assert main(["train", "--list-keys"]) == 0
    out = capsys.readouterr().out
    assert "train.lr (float, default 2e-05)" in out and "data.max_bad_fraction" in out and "stage2_lora" in out


def test_quiet_by_default_and_library_output_with_v(tiny_llava_dir):
    """A command that loads a model prints its own lines only; -v shows the libraries' weight-loading bars."""
    cmd = [sys.executable, "-m", "llava15.cli", "chat", "--model", str(tiny_llava_dir), "--device", "cpu"]
    quiet = subprocess.run(cmd, input="/exit\n", capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stderr.strip() == "" and "llava15 chat:" in quiet.stdout
    loud = subprocess.run([*cmd, "-v"], input="/exit\n", capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0 and "Loading weights" in loud.stderr
