"""Evaluation throughput of `llava15 eval run`'s two protocols on the same model and questions, in the
same process: `--protocol official` (the original `model_vqa_loader.py` loop: one question at a time,
`model.generate` in half precision, `tokenizer.batch_decode`) against `--protocol fast` (the batched
engine at the checkpoint's own dtype). Questions: a POPE-layout folder with several questions per image,
short answers. Prints both rates, the speed ratio, and how many answers differ between the protocols
(greedy decoding is the same in exact arithmetic, not bit-equal across precisions and batch shapes).

    .venv/bin/python benchmarks/eval_throughput.py [--images 16 --per-image 4 --batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

SUFFIX = "\nAnswer the question using a single word or phrase."
OBJECTS = ["cat", "dog", "car", "person", "chair", "cup", "bird", "boat"]


def make_pope_folder(root: Path, images: int, per_image: int) -> Path:
    ev = root / "playground" / "data" / "eval" / "pope"
    (ev / "val2014").mkdir(parents=True)
    rows = []
    for i in range(images):
        name = f"COCO_val2014_{i:012d}.jpg"
        Image.new("RGB", (64 + 8 * i, 48), (17 * i % 255, 90, 200)).save(ev / "val2014" / name)
        for k in range(per_image):
            rows.append({"question_id": len(rows) + 1, "image": name, "category": "random",
                         "text": f"Is there a {OBJECTS[(i + k) % len(OBJECTS)]} in the image?" + SUFFIX})  # fmt: skip
    (ev / "llava_pope_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def timed_run(bench, questions, path: Path, protocol: str, model: str, batch_size: int, cap: int
              ) -> tuple[float, list[str], str]:  # fmt: skip
    """Answers of one protocol and the seconds they took (after a one-question warm-up)."""
    from llava15.eval.runner import answer_shard, engine_generate, model_image

    generate, settings, image = engine_generate(model, "cpu", cap, protocol)
    bs = 1 if protocol == "official" else batch_size

    def prepare(im):
        return model_image(bench, im, protocol, image)

    answer_shard(bench, questions[:1], path.with_suffix(".warm"), generate, bs, "m", lambda s: None, prepare)
    start = time.perf_counter()
    answer_shard(bench, questions, path, generate, bs, "m", lambda s: None, prepare)
    seconds = time.perf_counter() - start
    return seconds, [json.loads(x)["text"] for x in path.read_text().splitlines()], settings["dtype"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--per-image", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16, help="fast protocol batch size")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="short answers (the same for both protocols)")
    ap.add_argument("--model", default=None, help="checkpoint (default: a fresh make_tiny_llava)")
    args = ap.parse_args()

    from llava15.eval.benchmarks import get_benchmark
    from llava15.testing import make_tiny_llava

    with tempfile.TemporaryDirectory(prefix="eval-throughput-") as tmp:
        tmp = Path(tmp)
        model = str(args.model or make_tiny_llava(tmp / "tiny-llava"))
        bench = get_benchmark("pope")
        questions = bench.load(make_pope_folder(tmp / "data", args.images, args.per_image))
        n = len(questions)
        off_s, off, off_dtype = timed_run(bench, questions, tmp / "official.jsonl", "official", model,
                                          args.batch_size, args.max_new_tokens)  # fmt: skip
        fast_s, fast, fast_dtype = timed_run(bench, questions, tmp / "fast.jsonl", "fast", model, args.batch_size,
                                             args.max_new_tokens)  # fmt: skip
        differ = sum(a != b for a, b in zip(off, fast))

    print(f"questions: {n} ({args.images} images x {args.per_image}), max_new_tokens {args.max_new_tokens}, "
          f"threads {torch.get_num_threads()}")  # fmt: skip
    print(f"official (batch 1, {off_dtype}, generate): {n / off_s:8.2f} q/s  ({off_s:.2f} s)")
    print(f"fast (batch {args.batch_size}, {fast_dtype}, engine): {n / fast_s:8.2f} q/s  ({fast_s:.2f} s)")
    print(f"speed ratio fast/official: {off_s / fast_s:.2f}x")
    print(f"answers that differ between the protocols: {differ}/{n}")


if __name__ == "__main__":
    main()
