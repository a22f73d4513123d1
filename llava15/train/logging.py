"""Training metrics on rank 0: a tqdm bar, a JSONL log, TensorBoard events, W&B when asked.

`MetricsLogger.log(step, metrics)` writes one JSON line per logged step to `output_dir/metrics.jsonl`
(appending, so a resumed run continues the same file; lines of steps past the resume point are
dropped first so the log reads as one run), one scalar per key to TensorBoard, and to W&B if
`train.wandb` is set and `wandb` is installed. The bar shows loss, lr, tokens/s, samples/s, memory and
the ETA; without a terminal a plain line is printed every `log_steps` steps instead. Non-main ranks get
a logger that does nothing.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

import torch


def peak_memory_mib(device: torch.device) -> float:
    """Peak accelerator memory on GPU; peak resident set size of this process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss_kib / 1024 if sys.platform != "darwin" else rss_kib / 2**20


def host_rss_mib() -> float:
    """This process's resident set size now (Linux `/proc/self/status`; else its peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_memory_mib(torch.device("cpu"))


def say(msg: str, is_main: bool = True) -> None:
    """Rank-0 console line (through tqdm so it does not break the bar)."""
    if is_main:
        from tqdm import tqdm
        tqdm.write(msg)


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Drop lines logged after `last_step` (a killed run may have logged beyond its last checkpoint)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= last_step]
    path.write_text("".join(line + "\n" for line in kept))


class MetricsLogger:
    def __init__(self, output_dir: str | Path, total_steps: int, start_step: int, enabled: bool,
                 tensorboard: bool = True, wandb: bool = False, run_config: dict | None = None,
                 progress: bool = True, log_steps: int = 1):
        self.enabled = enabled
        self.log_steps = max(1, log_steps)
        self.total_steps = total_steps
        self.bar = None
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = out / "metrics.jsonl"
        truncate_jsonl(self.jsonl_path, start_step)
        self.jsonl = open(self.jsonl_path, "a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(log_dir=str(out / "tensorboard"), purge_step=start_step + 1)
            except ImportError:
                say("tensorboard is not installed: no TensorBoard events (pip install tensorboard)")
        if wandb:
            try:
                import wandb as wb
                self.wandb = wb.init(project=os.environ.get("WANDB_PROJECT", "llava15"),
                                     config=run_config, dir=str(out), resume="allow")
            except ImportError:
                say("train.wandb=true but wandb is not installed: skipping W&B (pip install wandb)")
        if progress:
            from tqdm import tqdm
            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                            disable=not sys.stderr.isatty() and os.environ.get("LLAVA15_BAR") != "1")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **metrics}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.tb.add_scalar(f"train/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def advance(self, step: int, metrics: dict[str, Any]) -> None:
        """Move the bar to `step` and show the headline metrics (a plain line when not on a terminal)."""
        if self.bar is None:
            return
        if self.bar.disable:
            if step % self.log_steps == 0 or step == self.total_steps:
                say(f"step {step}/{self.total_steps} loss {metrics.get('loss', 0):.4f} "
                    f"lr {metrics.get('lr', 0):.2e} {metrics.get('samples_per_s', 0):.2f} samples/s "
                    f"{metrics.get('tokens_per_s', 0):.0f} tok/s mem {metrics.get('memory_mib', 0):.0f} MiB")
            return
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(loss=f"{metrics.get('loss', 0):.4f}", lr=f"{metrics.get('lr', 0):.2e}",
                             tok_s=f"{metrics.get('tokens_per_s', 0):.0f}",
                             smp_s=f"{metrics.get('samples_per_s', 0):.2f}",
                             mem=f"{metrics.get('memory_mib', 0):.0f}M", refresh=False)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
