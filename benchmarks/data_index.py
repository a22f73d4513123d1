"""Indexing speed and memory of a generated 665K-record LLaVA JSON (target: <= 30 s, <= 1.5 GB RSS).

Generates a file shaped like `llava_v1_5_mix665k.json` (about 1.5 KB per record, 1-8 rounds, ~15%
text-only), then indexes it in a child process with `DatasetIndex.build` (no tokenization, no image
checks) and prints the seconds and the child's peak RSS. The original instead `json.load`s the whole
list in every worker.

    python benchmarks/data_index.py [--records 665000] [--keep FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("the a man woman dog cat street car bus red blue green large small two three is are on in of with "
         "near behind holding sitting standing image picture shows what where how many color").split()


def generate(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)

    pool = [" ".join(rng.choice(WORDS) for _ in range(k)) for k in range(3, 61) for _ in range(40)]

    def sentence(k: int) -> str:  # a pooled sentence of about k words (generation speed, not realism)
        return pool[(k - 3) * 40 + rng.randrange(40)] if 3 <= k <= 60 else pool[0]

    with open(path, "w") as f:
        f.write("[")
        for i in range(n):
            rounds = rng.choice((1, 1, 2, 3, 4, 8))
            turns = []
            for r in range(rounds):
                q = sentence(rng.randint(5, 20)) + "?"
                turns.append({"from": "human", "value": ("<image>\n" + q) if r == 0 else q})
                turns.append({"from": "gpt", "value": sentence(rng.randint(3, 60)) + "."})
            rec = {"id": f"{i:09d}", "conversations": turns}
            if rng.random() > 0.15:
                rec["image"] = f"coco/train2017/{i:012d}.jpg"
            else:
                turns[0]["value"] = turns[0]["value"].replace("<image>\n", "")
            f.write(("," if i else "") + json.dumps(rec))
        f.write("]")


def index_child(path: str, original: bool) -> None:
    t, cpu = time.perf_counter(), time.process_time()
    if original:  # what the original LazySupervisedDataset does: json.load, then word counts
        records = json.load(open(path))
        lengths = [sum(len(t["value"].split()) for t in r["conversations"]) * (1 if "image" in r else -1)
                   for r in records]
        n, text_only = len(records), sum(v < 0 for v in lengths)
    else:
        from llava15.data.dataset import DatasetIndex

        index = DatasetIndex.build(path, image_folder=None)
        n, text_only = len(index), int((index.modality_lengths < 0).sum())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"records": n, "seconds": round(time.perf_counter() - t, 2), "text_only": text_only,
                      "cpu_seconds": round(time.process_time() - cpu, 2), "peak_rss_mb": round(rss, 1)}))


def measure(path: Path, original: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", str(path)] + (["--original"] if original else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=665_000)
    ap.add_argument("--keep", help="write/reuse the generated file here")
    ap.add_argument("--compare", action="store_true", help="also time the original's json.load approach")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--original", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return index_child(args.child, args.original)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep or Path(tmp) / "mix.json")
        if not path.exists():
            t = time.perf_counter()
            generate(path, args.records)
            print(f"generated {args.records} records, {path.stat().st_size / 1e9:.2f} GB "
                  f"in {time.perf_counter() - t:.1f} s")
        res = measure(path, original=False)
        ok = res["seconds"] <= 30 and res["peak_rss_mb"] <= 1536
        print(f"llava15 index: {res['records']} records ({res['text_only']} text-only) in {res['seconds']} s "
              f"wall, {res['cpu_seconds']} s CPU, peak RSS {res['peak_rss_mb']} MB (2-core CPU; target "
              f"<= 30 s, <= 1536 MB: {'OK' if ok else 'MISSED'})")
        if args.compare:
            ref = measure(path, original=True)
            print(f"original json.load + word counts: {ref['seconds']} s wall, {ref['cpu_seconds']} s CPU, "
                  f"peak RSS {ref['peak_rss_mb']} MB (RSS ratio {ref['peak_rss_mb'] / res['peak_rss_mb']:.1f}x)")


if __name__ == "__main__":
    main()
