"""Multiple-choice evaluation sets in the official layouts: ScienceQA-IMG (CQM-A question file,
problems.json, pid_splits.json, images/test/<pid>/image.png) and MMBench (dev TSV with base64 images
and circular copies). See `benchmarks.py` for the table of all layouts.
"""

from __future__ import annotations

import base64
from pathlib import Path

from llava15.demo.world import text as T
from llava15.demo.world.scenes import draw_scene
from llava15.demo.world.text_only import text_only_qa
from llava15.demo.world.world import World, png_bytes, write_json

MC_KINDS = ("color", "shape", "where", "size", "count")


def write_scienceqa(world: World, root: Path, n: int) -> dict[str, str]:
    """ScienceQA-IMG-like: two problems in three ask about an image (questions drawn like A-OKVQA's),
    the rest are text-only; 2-5 choices; `Context:` line only when the hint is non-empty."""
    d = root / "scienceqa"
    problems, entries = {}, []
    for i in range(n):
        pid = f"s{world.seed}q{i:05d}"
        rng = world.rng("eval-scienceqa-text", i)
        if i % 3 != 2:
            scene, rng = world.scene("eval-scienceqa", i, d / "images" / "test", f"{pid}/image.png")
            qa = T.sample_qas(scene, rng, 1, kinds=MC_KINDS)[0]
            choices, answer = T.multiple_choice(qa, rng, k=rng.randint(2, 5))
            hint = f"Look at the shapes on the {scene.background} background." if rng.random() < 0.5 else ""
            question, subject, image = qa.question, "natural science", "image.png"
        else:
            qa = text_only_qa(rng)
            choices, answer = T.multiple_choice(qa, rng, k=rng.randint(2, 5))
            hint = "Select the best answer." if rng.random() < 0.5 else ""
            question, image = qa.question, None
            subject = "language science" if qa.kind in ("letters", "first") else "natural science"
        problems[pid] = {"question": question, "choices": choices, "answer": answer, "hint": hint,
                         "image": image, "task": "closed choice", "grade": "grade1", "subject": subject,
                         "topic": "synthetic", "category": "synthetic", "skill": "synthetic",
                         "lecture": "", "solution": "", "split": "test"}
        human = "\n".join(([T.IMAGE] if image else []) + ([f"Context: {hint}"] if hint else [])
                          + [T.format_options(question, choices)])
        entry = {"id": pid}
        if image:
            entry["image"] = f"{pid}/image.png"
        entry["conversations"] = [{"from": "human", "value": human}, {"from": "gpt", "value": T.LETTERS[answer]}]
        entries.append(entry)
        world.add_text(human.replace(T.IMAGE, "").strip(), T.LETTERS[answer])
    splits = {"train": [], "val": [], "test": list(problems), "trainval": [], "minival": [], "minitest": []}
    return {"question_file": str(write_json(d / "llava_test_CQM-A.json", entries, indent=2)),
            "image_folder": str(d / "images" / "test"), "base_dir": str(d),
            "problems": str(write_json(d / "problems.json", problems)),
            "pid_splits": str(write_json(d / "pid_splits.json", splits))}


MMB_COLUMNS = ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category",
               "source", "split", "comment", "image")
MMB_CATEGORY = {"color": ("attribute_recognition", "finegrained_single_instance"),
                "shape": ("attribute_recognition", "finegrained_single_instance"),
                "size": ("attribute_comparison", "finegrained_cross_instance"),
                "where": ("object_localization", "finegrained_single_instance"),
                "count": ("image_quality", "coarse_perception"),
                "ocr_word": ("ocr", "finegrained_single_instance"),
                "ocr_color": ("ocr", "finegrained_single_instance"),
                "ocr_count": ("ocr", "finegrained_single_instance")}


def write_mmbench(world: World, root: Path, n: int) -> dict[str, str]:
    """MMBench dev TSV: `n` base questions (2-4 options, A-D), then for k = 1..n_options-1 a circular
    copy with index base + k*1,000,000 and the options rotated right by k. Missing options and hints
    are empty cells (NaN for pandas, as in the original file)."""
    d = root / "mmbench"
    rows: list[list[str]] = []
    for i in range(n):
        scene, rng = world.scene("eval-mmbench", i, None, f"{i:06d}.png")  # images live in the TSV
        ocr = bool(scene.words) and rng.random() < 0.3
        qa = T.sample_qas(scene, rng, 1, kinds=None if ocr else MC_KINDS, ocr=ocr)[0]
        options, answer = T.multiple_choice(qa, rng, k=rng.randint(2, 4))
        hint = "The image shows simple shapes on a plain background." if rng.random() < 0.3 else ""
        image_b64 = base64.b64encode(png_bytes(draw_scene(scene))).decode("ascii")
        cat, l2 = MMB_CATEGORY[qa.kind]
        for k, (opts, ans) in enumerate(T.rotations(options, answer)):
            cells = [str(i + k * 1_000_000), qa.question, hint, *(opts + [""] * (4 - len(opts))),
                     T.LETTERS[ans], cat, l2, "synthetic", "dev", "", image_b64]
            rows.append(cells)
        world.add_text(qa.question, hint, *options)
    rows.sort(key=lambda r: int(r[0]))
    path = d / "mmbench_dev_20230712.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\t".join(MMB_COLUMNS) + "\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return {"question_file": str(path), "annotation_file": str(path)}
