"""MMBench-CN (dev 20231003): MMBench's protocol with the Chinese letter instruction (``--lang cn``).

Layout: ``mmbench_cn/mmbench_dev_cn_20231003.tsv``.
"""

from __future__ import annotations

from llava15.eval.benchmarks.base import LETTER_ANSWER_CN
from llava15.eval.benchmarks.mmbench import MMBench


class MMBenchCN(MMBench):
    name = "mmbench_cn"
    title = "MMB-CN"
    folder = "mmbench_cn"
    question_file = tsv_name = "mmbench_dev_cn_20231003.tsv"
    suffix = LETTER_ANSWER_CN
