"""The benchmark registry: an explicit dict from name to benchmark class (no auto-import, no guessing).

``get_benchmark(name)`` returns an instance; an unknown name raises and lists the known ones.
``BENCHMARKS`` is in the paper's Table 2 column order.
"""

from __future__ import annotations

from llava15.eval.benchmarks.base import Benchmark, Question
from llava15.eval.benchmarks.gqa import GQA
from llava15.eval.benchmarks.llava_bench import LlavaBench
from llava15.eval.benchmarks.mmbench import MMBench
from llava15.eval.benchmarks.mmbench_cn import MMBenchCN
from llava15.eval.benchmarks.mme import Mme
from llava15.eval.benchmarks.mmvet import MMVet
from llava15.eval.benchmarks.pope import Pope
from llava15.eval.benchmarks.scienceqa import ScienceQA
from llava15.eval.benchmarks.seed import SeedBench
from llava15.eval.benchmarks.textvqa import TextVQA
from llava15.eval.benchmarks.vizwiz import VizWiz
from llava15.eval.benchmarks.vqav2 import VQAv2

BENCHMARKS: dict[str, type[Benchmark]] = {
    "vqav2": VQAv2,
    "gqa": GQA,
    "vizwiz": VizWiz,
    "scienceqa": ScienceQA,
    "textvqa": TextVQA,
    "pope": Pope,
    "mme": Mme,
    "mmbench": MMBench,
    "mmbench_cn": MMBenchCN,
    "seed": SeedBench,
    "llava_bench": LlavaBench,
    "mmvet": MMVet,
}


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]()
    except KeyError:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None


__all__ = ["BENCHMARKS", "Benchmark", "Question", "get_benchmark"]
