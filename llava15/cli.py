"""`llava15` command line: argument parsing only.

Each subcommand names the function that runs it as "module:function"; the module is imported only
when that subcommand runs, so `llava15 --help` and every `--help` stay fast and import no torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from llava15.config import DEFAULT_TEMPLATE

AddArgs = Callable[[argparse.ArgumentParser], None]


def _train(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML (e.g. recipes/stage2_finetune.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=2e-5 data.path=x.json")
    p.add_argument("--dry-run", action="store_true",
                   help="build everything, run two steps, report peak memory and projected time")


def _convert(p: argparse.ArgumentParser) -> None:
    p.add_argument("--to", required=True, choices=["hf", "original"], help="target layout")
    p.add_argument("src", help="source checkpoint folder")
    p.add_argument("dst", help="destination folder (created)")
    p.add_argument("--vision-tower", default=None,
                   help="vision tower for an original checkpoint without tower weights "
                        "(default: its mm_vision_tower)")


def _merge(p: argparse.ArgumentParser) -> None:
    p.add_argument("adapter_dir", help="LoRA run output (adapter + non-LoRA trainables)")
    p.add_argument("dst", help="destination folder for the merged full checkpoint")


def _export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--to", required=True, choices=["vllm"], help="target runtime")
    p.add_argument("src", help="llava15 checkpoint folder")
    p.add_argument("dst", help="destination folder")


def _data_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="LLaVA JSON/JSONL file or datasets folder/parquet")
    p.add_argument("--images", default=None, help="image root folder")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (enables token-level checks)")
    p.add_argument("--template", default=DEFAULT_TEMPLATE, help="chat template name")
    p.add_argument("--num-image-tokens", type=int, default=576, help="tokens each image expands to")
    p.add_argument("--model-max-length", type=int, default=2048, help="token budget per sample")
    p.add_argument("--max-problem-fraction", type=float, default=0.0,
                   help="exit non-zero when more than this fraction of records has a problem")
    p.add_argument("--histogram", default=None, help="write the token-length histogram PNG here")


def _data_show(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="LLaVA JSON/JSONL file or datasets folder/parquet")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder")
    p.add_argument("--template", default=DEFAULT_TEMPLATE, help="chat template name")
    p.add_argument("--format", default="text", choices=["text", "json"], help="output format")
    p.add_argument("--inference", action="store_true",
                   help="show the generation prompt of the first turn and its ids")
    p.add_argument("--images", default=None, help="image root folder (optional)")
    p.add_argument("--limit", type=int, default=0, help="show at most N records (0 = all)")


def _data_synth(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--train", type=int, default=None, help="training scenes per stage (default 2000)")
    p.add_argument("--eval", type=int, default=None, help="images per benchmark (default 100)")
    p.add_argument("--size", type=int, default=None, help="object grid side in pixels (default 96)")


def _chat(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint folder or hub id")
    p.add_argument("--image", default=None, help="image to attach to the first message")
    p.add_argument("--template", default=None, help="override the checkpoint's template")
    p.add_argument("--temperature", type=float, default=0.2, help="sampling temperature (0 = greedy)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="tokens per reply")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: best available)")
    p.add_argument("--quantize", default=None, choices=["int8", "fp8", "nf4"],
                   help="store the language model's linear layers quantized (weights only; vision tower, projector "
                        "and lm_head untouched): less memory, and on a GPU faster batch-1 decoding")
    p.add_argument("--eager", action="store_true",
                   help="on a GPU, decode without torch.compile and CUDA graphs (the default uses both)")


def _serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint folder or hub id")
    p.add_argument("--host", default="127.0.0.1", help="bind address")
    p.add_argument("--port", type=int, default=8000, help="port")
    p.add_argument("--api-key", default=None, help="require this bearer token")
    p.add_argument("--allowed-image-dir", default=None, help="allow file:// images under this folder")
    p.add_argument("--allow-remote-images", action="store_true", help="allow http(s) image URLs")
    p.add_argument("--max-batch-size", type=int, default=8, help="concurrent requests batched together")
    p.add_argument("--max-tokens-limit", type=int, default=2048, help="largest max_tokens accepted")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: best available)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the decode step on CPU too (on a GPU it is the default; each new batch size "
                        "and cache-length bucket compiles first, ~20-30 s for a small model on 2 CPU cores)")
    p.add_argument("--quantize", default=None, choices=["int8", "fp8", "nf4"],
                   help="store the language model's linear layers quantized (weights only; vision tower, projector "
                        "and lm_head untouched): less memory, and on a GPU faster batch-1 decoding")
    p.add_argument("--eager", action="store_true",
                   help="on a GPU, decode without torch.compile and CUDA graphs (the default uses both)")


def _eval_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint folder or hub id")
    p.add_argument("--benchmarks", required=True, help="comma-separated names, e.g. pope,mme,textvqa")
    p.add_argument("--data-root", required=True, help="folder laid out as playground/data/eval")
    p.add_argument("--out", required=True, help="output folder (answers, scores, report)")
    p.add_argument("--batch-size", type=int, default=16, help="questions per generation batch")
    p.add_argument("--limit", type=int, default=0, help="at most N questions per benchmark (0 = all)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="cap the official per-benchmark max_new_tokens (quick checks only)")
    p.add_argument("--judge-url", default=None, help="OpenAI-compatible endpoint for LLaVA-Bench/MM-Vet")
    p.add_argument("--judge-model", default=None, help="judge model name")
    p.add_argument("--judge-runs", type=int, default=1, help="judge runs to average (the paper: 3)")
    p.add_argument("--device", default=None, help="cpu, cuda, ...")
    p.add_argument("--eager", action="store_true",
                   help="on a GPU, decode without torch.compile and CUDA graphs (the default uses both)")


def _eval_score(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", required=True, help="benchmark name")
    p.add_argument("--answers", required=True,
                   help="answers file (official answer format); comma-separated files = several judge runs")
    p.add_argument("--data-root", required=True, help="folder laid out as playground/data/eval")
    p.add_argument("--out", default=None, help="write scores JSON here")
    p.add_argument("--judge-url", default=None, help="OpenAI-compatible endpoint for judged benchmarks")
    p.add_argument("--judge-model", default=None, help="judge model name")
    p.add_argument("--judge-runs", type=int, default=1, help="judge runs to average (the paper: 3)")


def _eval_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("scores", nargs="+", help="scores JSON files written by `eval run`/`eval score`")
    p.add_argument("--out", required=True, help="output folder for report.md, report.json, chart.png")


def _demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo-output", help="output folder")
    p.add_argument("--ablations", action="store_true",
                   help="run Table 1's ablations in miniature instead of the demo: MLP vs linear projector, "
                   "with vs without format prompts")
    p.add_argument("--llm", default=None, choices=["smollm2"], help="use a real pretrained LM")
    p.add_argument("--eval-only", action="store_true", help="evaluate an existing demo checkpoint")
    p.add_argument("--checkpoint", default=None, help="checkpoint for --eval-only")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic world")
    p.add_argument("--smoke", action="store_true",
                   help="a tiny world and two steps per stage: checks the whole path in about a minute")


# name -> (help, add_args, "module:function"); groups hold their own tables.
COMMANDS: dict[str, tuple[str, AddArgs, str] | tuple[str, dict]] = {
    "train": ("train a model from a recipe", _train, "llava15.train.run:main"),
    "convert": ("convert between the original LLaVA and the HF layout", _convert,
                "llava15.model.convert:run_convert"),
    "merge": ("merge a LoRA run into a full checkpoint", _merge, "llava15.model.lora:run_merge"),
    "export": ("export a checkpoint for a serving runtime (vLLM)", _export,
               "llava15.infer.export:run_export"),
    "data": ("inspect, validate and synthesise training data", {
        "check": ("validate every record and print a report", _data_check, "llava15.data.check:run_check"),
        "show": ("render records as exact prompts with supervised spans", _data_show,
                 "llava15.data.check:run_show"),
        "synth": ("write the synthetic world's training and evaluation files", _data_synth,
                  "llava15.demo.world:run_synth"),
    }),
    "chat": ("chat with a model in the terminal", _chat, "llava15.infer.chat:run_chat"),
    "serve": ("OpenAI-compatible HTTP server with a web UI", _serve, "llava15.infer.server:run_serve"),
    "eval": ("evaluate on the paper's benchmarks", {
        "run": ("generate answers and score them", _eval_run, "llava15.eval.runner:run_eval"),
        "score": ("score an answers file", _eval_score, "llava15.eval.score:run_score"),
        "report": ("Table-2 report from scores files", _eval_report, "llava15.eval.report:run_report"),
    }),
    "demo": ("the whole paper on the synthetic world, on a CPU, in minutes", _demo, "llava15.demo.run:run_demo"),
}


def _add_commands(sub: argparse._SubParsersAction, table: dict) -> None:
    for name, entry in table.items():
        if isinstance(entry[1], dict):
            group = sub.add_parser(name, help=entry[0], description=entry[0])
            _add_commands(group.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND"),
                          entry[1])
            continue
        help_text, add_args, target = entry
        parser = sub.add_parser(name, help=help_text, description=help_text)
        add_args(parser)
        parser.set_defaults(_target=target)


def build_parser() -> argparse.ArgumentParser:
    from llava15 import __version__

    parser = argparse.ArgumentParser(prog="llava15", description="LLaVA-1.5: train, evaluate, serve, convert")
    parser.add_argument("--version", action="version", version=f"llava15 {__version__}")
    _add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"), COMMANDS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func_name = args._target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
