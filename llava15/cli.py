"""`llava15` command line: argument parsing, the checks that run before a command, and the error boundary.

Each subcommand names the function that runs it as "module:function"; the module is imported only
when that subcommand runs, so `llava15 --help` and every `--help` stay fast and import no torch.

Before a command runs, `main` checks its inputs (`_checks` of the subcommand: paths, images, model
folders or hub ids, destinations; `llava15.model.preflight`) so a mistake is named in a fraction of a
second, not after a model has loaded. Values with a fixed set of choices (templates, benchmarks) are
checked by argparse and listed in `--help`.

The error boundary: a known error (config, data, checkpoint, hub/offline, I/O, input) prints one line
`llava15 CMD: error: ...` naming the file, record, field or key and exits 1; a usage error exits 2; an
unexpected exception prints its traceback and asks for a report. `--debug` (or `LLAVA15_DEBUG=1`)
shows the traceback of known errors too. Libraries are quiet unless `-v` (warnings, logs and
weight-loading bars; download bars stay).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from llava15.config import DEFAULT_TEMPLATE

AddArgs = Callable[[argparse.ArgumentParser], None]
PKG_DIR = Path(__file__).resolve().parent


# ------------------------------------------------------------------ values with a fixed set of choices

def template_names() -> list[str]:
    from llava15.data.templates import TEMPLATES

    return [*TEMPLATES, "hf_chat_template"]


def benchmark_names() -> list[str]:
    from llava15.eval.benchmarks import BENCHMARKS

    return list(BENCHMARKS)


def _template(value: str) -> str:
    from llava15.data.templates import ALIASES

    if value not in template_names() and value not in ALIASES:
        raise argparse.ArgumentTypeError(f"unknown template {value!r}; known: {', '.join(template_names())}")
    return value


def _benchmark_list(value: str) -> str:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in benchmark_names()]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown benchmark {', '.join(unknown) or repr(value)}; "
                                         f"known: {', '.join(benchmark_names())}")
    return value


def _templates_epilog() -> str:
    return f"templates: {', '.join(template_names())}"


def _benchmarks_epilog() -> str:
    return f"benchmarks (the paper's Table 2 order): {', '.join(benchmark_names())}"


# ------------------------------------------------------------------------------------- the commands

def _train(p: argparse.ArgumentParser) -> None:
    from llava15.config import packaged_recipes

    p.add_argument("recipe", nargs="?", help="a packaged recipe's name (e.g. stage2_finetune) or a recipe YAML")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=2e-5 data.path=x.json")
    p.add_argument("--dry-run", action="store_true",
                   help="build everything, run two steps, report peak memory and projected time")
    p.add_argument("--list-keys", action="store_true",
                   help="list every recipe key with its type, default and meaning, and the packaged recipes")
    p.epilog = f"packaged recipes: {', '.join(packaged_recipes())}"
    p.set_defaults(_checks=[("recipe", "recipe")])


def _convert(p: argparse.ArgumentParser) -> None:
    p.add_argument("--to", required=True, choices=["hf", "original"], help="target layout")
    p.add_argument("src", help="source checkpoint folder, or a training run's checkpoints/step-N (--to hf)")
    p.add_argument("dst", help="destination folder (created; must be empty unless --overwrite)")
    p.add_argument("--vision-tower", default=None,
                   help="vision tower for an original checkpoint without tower weights "
                        "(default: its mm_vision_tower)")
    _overwrite(p, "dst")
    p.set_defaults(_checks=[("convert_source", "src"), ("model", "vision_tower")])


def _merge(p: argparse.ArgumentParser) -> None:
    p.add_argument("adapter_dir", help="LoRA run output (adapter + non-LoRA trainables)")
    p.add_argument("dst", help="destination folder for the merged full checkpoint")
    _overwrite(p, "dst")
    p.set_defaults(_checks=[("lora_adapter", "adapter_dir")])


def _export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--to", required=True, choices=["vllm"], help="target runtime")
    p.add_argument("src", help="llava15 checkpoint folder or hub id")
    p.add_argument("dst", help="destination folder")
    _overwrite(p, "dst")
    p.set_defaults(_checks=[("model", "src")])


def _data_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="LLaVA JSON/JSONL file, datasets folder/parquet, or hf://<repo>[/file]")
    p.add_argument("--images", default=None, help="image root folder (enables the image-file checks)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder or hub id (enables token-length checks)")
    p.add_argument("--template", default=DEFAULT_TEMPLATE, type=_template, help="chat template name")
    p.add_argument("--num-image-tokens", type=int, default=576, help="tokens each image expands to")
    p.add_argument("--model-max-length", type=int, default=2048, help="token budget per sample")
    p.add_argument("--max-problem-fraction", type=float, default=0.0,
                   help="exit 1 when more than this fraction of records (or lines) has a problem")
    p.add_argument("--histogram", default=None, help="write the token-length histogram PNG here")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.epilog = _templates_epilog()
    p.set_defaults(_checks=[("data", "file"), ("folder", "images"), ("tokenizer", "tokenizer")])


def _data_show(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="LLaVA JSON/JSONL file, datasets folder/parquet, or hf://<repo>[/file]")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder or hub id")
    p.add_argument("--template", default=DEFAULT_TEMPLATE, type=_template, help="chat template name")
    p.add_argument("--format", default="text", choices=["text", "json"], help="output format")
    p.add_argument("--inference", action="store_true",
                   help="show the generation prompt of the first turn and its ids")
    p.add_argument("--images", default=None, help="image root folder (optional)")
    p.add_argument("--limit", type=int, default=0, help="show at most N records (0 = all)")
    p.epilog = _templates_epilog()
    p.set_defaults(_checks=[("data", "file"), ("folder", "images"), ("tokenizer", "tokenizer")])


def _data_synth(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--train", type=int, default=None, help="training scenes per stage (default 2000)")
    p.add_argument("--eval", type=int, default=None, help="images per benchmark (default 100)")
    p.add_argument("--size", type=int, default=None, help="object grid side in pixels (default 96)")


def _data_prepare(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage", choices=["stage1", "stage2"], help="which stage's data to prepare")
    p.add_argument("--root", required=True, help="data root, laid out as the original's playground/data")
    p.add_argument("--only", default=None, help="comma-separated sources (stage1: llava_pretrain; "
                   "stage2: coco,gqa,ocr_vqa,textvqa,vg); the record file is always fetched")
    p.add_argument("--dry-run", action="store_true", help="print what would be fetched, sizes and free disk")
    p.add_argument("--mirror", action="append", default=[], metavar="NAME=URL",
                   help="fetch archive NAME (coco, gqa, textvqa, vg_part1, vg_part2) from URL instead")
    p.add_argument("--hub-endpoint", default=None, help="Hugging Face Hub endpoint (default: $HF_ENDPOINT)")
    p.add_argument("--ocr-vqa-json", default=None, metavar="URL|PATH",
                   help="OCR-VQA's dataset.json (the original shares it only through Google Drive)")
    p.add_argument("--jobs", type=int, default=4, help="parallel downloads, and OCR-VQA fetch threads")
    p.add_argument("--ocr-vqa-rate", type=float, default=10.0, help="OCR-VQA requests per second per host")
    p.add_argument("--keep-archives", action="store_true", help="keep archives after extracting them")
    p.add_argument("--redo", default=None, metavar="SOURCES",
                   help="fetch these sources again even if done or already on disk (e.g. records,coco)")
    p.add_argument("--no-space-check", action="store_true", help="start even if the free disk looks too small")


def _chat(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint folder or hub id")
    p.add_argument("--image", default=None, help="image to attach to the first message")
    p.add_argument("--template", default=None, type=_template,
                   help="override the checkpoint's template (default: the one it was trained with)")
    p.add_argument("--temperature", type=float, default=0.2, help="sampling temperature (0 = greedy)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="tokens per reply")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: best available)")
    p.add_argument("--quantize", default=None, choices=["int8", "fp8", "nf4"],
                   help="store the language model's linear layers quantized (weights only; vision tower, projector "
                        "and lm_head untouched): less memory, and on a GPU faster batch-1 decoding")
    p.add_argument("--eager", action="store_true",
                   help="on a GPU, decode without torch.compile and CUDA graphs (the default uses both)")
    p.epilog = _templates_epilog()
    p.set_defaults(_checks=[("model", "model"), ("image", "image")])


def _serve(p: argparse.ArgumentParser) -> None:
    from llava15.infer.limits import Limits

    d = Limits()
    p.add_argument("--model", required=True, help="checkpoint folder or hub id")
    p.add_argument("--served-model-name", default=None,
                   help="the model name clients send (default: the checkpoint's folder name)")
    p.add_argument("--host", default="127.0.0.1", help="bind address")
    p.add_argument("--port", type=int, default=8000, help="port")
    p.add_argument("--api-key", default=None,
                   help="require this bearer token (better: the LLAVA15_API_KEY environment variable, which "
                        "other users cannot see in the process list)")
    p.add_argument("--allowed-image-dir", default=None, help="allow file:// images under this folder")
    p.add_argument("--allow-remote-images", action="store_true", help="allow http(s) image URLs")
    p.add_argument("--max-batch-size", type=int, default=8, help="concurrent requests batched together")
    p.add_argument("--max-tokens-limit", type=int, default=d.max_tokens, help="largest max_tokens accepted")
    p.add_argument("--max-request-bytes", type=int, default=d.max_request_bytes, help="largest request body")
    p.add_argument("--max-image-bytes", type=int, default=d.max_image_bytes, help="largest image file")
    p.add_argument("--max-image-pixels", type=int, default=d.max_image_pixels,
                   help="largest image (width x height); larger ones are refused before decoding")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: best available)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the decode step on CPU too (on a GPU it is the default; each new batch size "
                        "and cache-length bucket compiles first, ~20-30 s for a small model on 2 CPU cores)")
    p.add_argument("--quantize", default=None, choices=["int8", "fp8", "nf4"],
                   help="store the language model's linear layers quantized (weights only; vision tower, projector "
                        "and lm_head untouched): less memory, and on a GPU faster batch-1 decoding")
    p.add_argument("--eager", action="store_true",
                   help="on a GPU, decode without torch.compile and CUDA graphs (the default uses both)")
    p.set_defaults(_checks=[("port", "port"), ("model", "model"), ("folder", "allowed_image_dir")])


def _eval_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--question-file", action="append", default=None, metavar="BENCH=PATH",
                   help="another question file for a benchmark (e.g. mmbench=mmbench_test_en_20231003.tsv); "
                        "repeatable")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CI (0 = none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")


def _eval_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint folder or hub id")
    p.add_argument("--benchmarks", required=True, type=_benchmark_list,
                   help="comma-separated names, e.g. pope,mme,textvqa")
    p.add_argument("--data-root", required=True,
                   help="folder holding, per benchmark, the official layout (playground/data/eval) or an "
                        "lmms-lab snapshot (<root>/lmms-lab/POPE/...); 'hf' reads the lmms-lab datasets "
                        "from the Hub")
    p.add_argument("--out", required=True, help="output folder (answers, scores, report)")
    p.add_argument("--protocol", choices=["official", "fast"], default="fast",
                   help="official: the original scripts' decoding (batch size 1, half precision, their image "
                        "order); fast: batched (default)")
    p.add_argument("--batch-size", type=int, default=16, help="questions per generation batch (fast protocol)")
    p.add_argument("--limit", type=int, default=0, help="at most N questions per benchmark (0 = all)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="cap the official per-benchmark max_new_tokens (quick checks only)")
    p.add_argument("--judge-url", default=None, help="OpenAI-compatible endpoint for LLaVA-Bench/MM-Vet")
    p.add_argument("--judge-model", default=None, help="judge model name")
    p.add_argument("--judge-runs", type=int, default=3, help="judge runs to average (the released numbers: 3)")
    p.add_argument("--device", default=None, help="cpu, cuda, ...")
    p.add_argument("--eager", action="store_true",
                   help="on a GPU, decode without torch.compile and CUDA graphs (the default uses both)")
    _eval_data_args(p)
    p.epilog = _benchmarks_epilog()
    # a data root that is not there is named as such; the files inside it `eval run` checks before loading
    p.set_defaults(_checks=[("folder", "data_root"), ("model", "model")])


def _eval_score(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", required=True, type=_benchmark_list, help="benchmark name")
    p.add_argument("--answers", required=True,
                   help="answers file (official answer format); comma-separated files = several judge runs")
    p.add_argument("--data-root", required=True,
                   help="official layout (playground/data/eval), a folder with lmms-lab snapshots, or 'hf'")
    p.add_argument("--out", default=None, help="write scores JSON here")
    p.add_argument("--judge-url", default=None, help="OpenAI-compatible endpoint for judged benchmarks")
    p.add_argument("--judge-model", default=None, help="judge model name")
    p.add_argument("--judge-runs", type=int, default=3, help="judge runs to average (the released numbers: 3)")
    _eval_data_args(p)
    p.epilog = _benchmarks_epilog()
    p.set_defaults(_checks=[("files", "answers")])


def _eval_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmarks", required=True, help="comma-separated names, e.g. pope,mme")
    p.add_argument("--out", required=True, help="data root: snapshots go to <out>/lmms-lab/<Name>")
    p.add_argument("--verify-only", action="store_true", help="check an existing snapshot, download nothing")


def _eval_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_a", help="`eval run` output folder (or a scores file)")
    p.add_argument("run_b", help="the run to compare with A (differences are B - A)")
    p.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--out", default=None, help="also write the table as JSON here")


def _eval_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("scores", nargs="+", help="scores JSON files written by `eval run`/`eval score`")
    p.add_argument("--out", required=True, help="output folder for report.md, report.json, chart.png")
    p.set_defaults(_checks=[("files", "scores")])


def _demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=["pretrain"],
                   help="`pretrain`: make the demo's pretrained tower and world-LM (what the package ships)")
    p.add_argument("--out", default="demo-output", help="output folder (must be empty unless --overwrite)")
    p.add_argument("--steps", type=int, default=None, help="pretrain: world-LM optimizer steps")
    p.add_argument("--init", default=None, help="pretrain: continue the world-LM of this earlier `demo pretrain` "
                   "output on the focus mixture (its tokenizer and tower are kept)")
    p.add_argument("--focus", default=None, help="pretrain --init: comma-separated drill kinds asked twice as "
                   "often in the continuation (color, exists, shape, where, what_at, size; default color,exists)")
    p.add_argument("--separate", default=None, help="pretrain --init: comma-separated one-token words whose "
                   "embedding rows are moved apart before the continuation (e.g. large,small)")
    p.add_argument("--ablations", action="store_true",
                   help="run Table 1's ablations in miniature instead of the demo: MLP vs linear projector, "
                   "with vs without format prompts")
    p.add_argument("--llm", default=None, choices=["smollm2"], help="use a real pretrained LM")
    p.add_argument("--eval-only", action="store_true", help="evaluate an existing demo checkpoint")
    p.add_argument("--checkpoint", default=None, help="checkpoint for --eval-only")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic world")
    p.add_argument("--smoke", action="store_true",
                   help="a tiny world and two steps per stage: checks the whole path in about a minute")
    _overwrite(p, "out", "replace the previous demo's outputs in --out")
    p.set_defaults(_checks=[("model", "checkpoint"), ("folder", "init")])


def _overwrite(p: argparse.ArgumentParser, dest: str, help_text: str = "write into a non-empty destination "
               "(files of the same name are replaced)") -> None:
    p.add_argument("--overwrite", action="store_true", help=help_text)
    p.set_defaults(_destination=dest)


# name -> (help, add_args, "module:function"); groups hold their own tables.
COMMANDS: dict[str, tuple[str, AddArgs, str] | tuple[str, dict]] = {
    "train": ("train a model from a recipe", _train, "llava15.train.run:main"),
    "convert": ("convert between the original LLaVA and the HF layout, or a training checkpoint to HF",
                _convert, "llava15.train.export:run_convert"),
    "merge": ("merge a LoRA run into a full checkpoint", _merge, "llava15.model.lora:run_merge"),
    "export": ("export a checkpoint for a serving runtime (vLLM)", _export,
               "llava15.infer.export:run_export"),
    "data": ("inspect, validate, synthesise and download training data", {
        "check": ("validate every record and print a report", _data_check, "llava15.data.check:run_check"),
        "show": ("render records as exact prompts with supervised spans", _data_show,
                 "llava15.data.check:run_show"),
        "synth": ("write the synthetic world's training and evaluation files", _data_synth,
                  "llava15.demo.world:run_synth"),
        "prepare": ("download the real stage-1/stage-2 data into the original's layout, then check it",
                    _data_prepare, "llava15.data.prepare:run_prepare"),
    }),
    "chat": ("chat with a model in the terminal", _chat, "llava15.infer.chat:run_chat"),
    "serve": ("OpenAI-compatible HTTP server with a web UI", _serve, "llava15.infer.server:run_serve"),
    "eval": ("evaluate on the paper's benchmarks", {
        "run": ("generate answers and score them", _eval_run, "llava15.eval.runner:run_eval"),
        "score": ("score an answers file", _eval_score, "llava15.eval.score:run_score"),
        "report": ("Table-2 report from scores files", _eval_report, "llava15.eval.report:run_report"),
        "data": ("download the lmms-lab datasets (resumable) and verify them", _eval_data,
                 "llava15.eval.hub:run_data"),
        "compare": ("per-benchmark differences between two runs, paired bootstrap", _eval_compare,
                    "llava15.eval.compare:run_compare"),
    }),
    "demo": ("the whole paper on the synthetic world, on a CPU, in minutes", _demo, "llava15.demo.run:run_demo"),
}


# ------------------------------------------------------------------------------------------- parsing

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows `(default: X)` for options that have a meaningful default (not None, not a False flag)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action) or ""


class _Parser(argparse.ArgumentParser):
    """A usage error is two lines (what is wrong, where the options are listed) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n(`{self.prog} --help` lists the options)\n")


def _common(p: argparse.ArgumentParser, default: object) -> None:
    p.add_argument("--debug", action="store_true", default=default,
                   help="show the full traceback of an error (also: LLAVA15_DEBUG=1)")
    p.add_argument("-v", "--verbose", action="store_true", default=default,
                   help="show the libraries' warnings, logs and weight-loading progress bars")


def _add_commands(sub: argparse._SubParsersAction, table: dict) -> None:
    for name, entry in table.items():
        if isinstance(entry[1], dict):
            group = sub.add_parser(name, help=entry[0], description=entry[0], formatter_class=_HelpFormatter)
            _add_commands(group.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND",
                                               parser_class=_Parser), entry[1])
            continue
        help_text, add_args, target = entry
        parser = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_HelpFormatter)
        add_args(parser)
        _common(parser, argparse.SUPPRESS)  # given after the command; the top level holds the defaults
        parser.set_defaults(_target=target, _prog=parser.prog, _parser=parser)


def build_parser() -> argparse.ArgumentParser:
    from llava15 import __version__

    parser = _Parser(prog="llava15", description="LLaVA-1.5: train, evaluate, serve, convert",
                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"llava15 {__version__}")
    _common(parser, False)
    _add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser),
                  COMMANDS)
    return parser


# ----------------------------------------------------------------------------- before a command runs

def _preflight(args: argparse.Namespace) -> None:
    """The subcommand's input checks (`_checks`) and its destination rule, before anything loads."""
    from llava15.config import load_recipe
    from llava15.model import preflight as pf

    checks: dict[str, Callable[[str, str], None]] = {
        "model": pf.check_model_ref, "checkpoint": pf.check_model_ref, "tokenizer": pf.check_tokenizer_ref,
        "convert_source": pf.check_convert_source,
        "lora_adapter": pf.check_lora_adapter, "image": pf.check_image_file, "folder": pf.check_folder,
        "data": pf.check_data_path,
        "files": lambda value, what: [pf.check_data_path(v, what) for v in str(value).split(",") if v],
        "port": lambda value, what: pf.check_port_free(args.host, value),
        "recipe": lambda value, what: pf.check_recipe_inputs(load_recipe(value, list(args.overrides or []))),
    }
    for kind, attr in getattr(args, "_checks", []):
        values = getattr(args, attr, None)
        for value in values if isinstance(values, list) else [values]:
            if value is not None:
                checks[kind](value, _arg_label(args, attr))
    dest = getattr(args, "_destination", None)
    if dest is not None:
        pf.check_destination(getattr(args, dest), args.overwrite, _arg_label(args, dest))


def _arg_label(args: argparse.Namespace, attr: str) -> str:
    for action in args._parser._actions:
        if action.dest == attr:
            return action.option_strings[-1] if action.option_strings else attr.upper()
    return attr


def _quiet_libraries(verbose: bool) -> None:
    """Library warnings, info logs and weight-loading bars only with -v; hub download bars always."""
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("llava15").setLevel(logging.INFO)
    if verbose:
        return
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    for name in ("transformers", "huggingface_hub", "torch", "peft", "datasets", "httpx", "PIL", "bitsandbytes"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
    except ImportError:
        return
    disable_progress_bars()  # transformers reads this when imported: no "Loading weights" bars
    enable_progress_bars("huggingface_hub")  # downloads keep theirs


# -------------------------------------------------------------------------------- the error boundary

def _loaded(module: str, name: str) -> type | None:
    """An exception class, if its module is already imported (an error of an unloaded module cannot occur)."""
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return cls if isinstance(cls, type) else None


KNOWN_ERRORS = [("llava15.config", "ConfigError"), ("llava15.model.preflight", "InputError"),
                ("llava15.data.conversation", "DataError"), ("llava15.model.format", "ConversionError"),
                ("llava15.model.format", "UnsafeCheckpointError"), ("llava15.infer.engine", "GenerationError"),
                ("llava15.model.gguf", "GGUFSourceError"), ("llava15.eval.judge", "JudgeError"),
                ("yaml", "YAMLError")]
HUB_ERRORS = [("huggingface_hub.errors", n) for n in (
    "LocalEntryNotFoundError", "RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError",
    "EntryNotFoundError", "OfflineModeIsEnabled", "HfHubHTTPError")]


def _raised_by_llava15(exc: BaseException) -> bool:
    """True for an exception our own code raised on purpose (`raise ...` in a llava15 module): its message
    was written for the user. A library's exception, or one from an operation in our code, is not."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return False
    last = frames[-1]
    return (Path(last.filename).resolve().is_relative_to(PKG_DIR) and (last.line or "").lstrip().startswith("raise ")
            and not isinstance(exc, (AssertionError, NotImplementedError, AttributeError, NameError)))


def describe_error(exc: BaseException) -> str | None:
    """The one-line message of a known error, or None for an unexpected one (a bug: show the traceback)."""
    classes = [c for c in (_loaded(m, n) for m, n in KNOWN_ERRORS) if c is not None]
    if classes and isinstance(exc, tuple(classes)):
        return str(exc)
    hub = [c for c in (_loaded(m, n) for m, n in HUB_ERRORS) if c is not None]
    if hub and isinstance(exc, tuple(hub)):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return (f"the Hugging Face hub: {first} (check the id and the network; offline, set HF_HUB_OFFLINE=1 "
                "and use a cached id or a local folder)")
    safetensor = _loaded("safetensors", "SafetensorError")
    if safetensor is not None and isinstance(exc, safetensor):
        return f"a safetensors weight file is damaged or truncated ({exc}); re-download or re-save it"
    if isinstance(exc, OSError):
        if exc.filename is not None and exc.strerror:
            return f"{exc.filename}: {exc.strerror}"
        lines = [x for x in str(exc).strip().splitlines() if x.strip()]
        return " ".join(lines[:2]) or type(exc).__name__
    if isinstance(exc, (ValueError, KeyError, TypeError, RuntimeError)) and _raised_by_llava15(exc):
        return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return None


def _report(exc: BaseException, prog: str, debug: bool) -> int:
    message = describe_error(exc)
    if message is None or debug:
        traceback.print_exception(exc)
    if message is None:
        print(f"{prog}: unexpected error ({type(exc).__name__}); this is a bug or an unhandled case in "
              "llava15: please report it with the command and the traceback above", file=sys.stderr)
        return 1
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = getattr(args, "_prog", "llava15")
    debug = bool(args.debug) or os.environ.get("LLAVA15_DEBUG", "") not in ("", "0")
    if getattr(args, "list_keys", False):
        from llava15.config import describe_keys

        print(describe_keys())
        return 0
    if "recipe" in vars(args) and not args.recipe:
        args._parser.error("the recipe is required (a packaged recipe's name or a YAML file; "
                           "`llava15 train --list-keys` lists the recipes and keys)")
    try:
        _preflight(args)
        _quiet_libraries(bool(args.verbose))
        module_name, func_name = args._target.split(":")
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return _report(exc, prog, debug)


if __name__ == "__main__":
    sys.exit(main())
