"""Evaluation sets in the official benchmark layouts (docs/evaluation.md), under `<eval_root>/<bench>/`
as LLaVA's `playground/data/eval/<bench>/`. Each writer takes `n` (images, or problems) and returns the
paths it wrote, keyed as the eval code asks for them (`question_file`, `image_folder`, `annotation_file`...).

| bench      | files (official names)                                                                       |
| vqav2      | llava_vqav2_mscoco_test-dev2015.jsonl (+ the same as test2015.jsonl), test2015/,              |
|            | v2_OpenEnded_mscoco_test-dev2015_questions.json, v2_mscoco_test-dev2015_annotations.json      |
|            | (10 answers per question in the official VQA annotation layout, for local VQA accuracy)       |
| pope       | llava_pope_test.jsonl (adversarial, popular, random; ids + 1e7 per split), val2014/,          |
|            | coco/coco_pope_<split>.json (label files, ids 1..N)                                           |
| MME        | llava_mme.jsonl, MME_Benchmark_release_version/<task>/<img>.png + <img>.txt (Yes line first)  |
| scienceqa  | llava_test_CQM-A.json, images/test/<pid>/image.png, problems.json, pid_splits.json            |
| mmbench    | mmbench_dev_20230712.tsv (base64 PNG images, circular copies index + k*1e6, rotated options)   |
| textvqa    | llava_textvqa_val_v051_ocr.jsonl (3-line prompt with OCR tokens), train_images/,             |
|            | TextVQA_0.5.1_val.json                                                                       |
"""

from __future__ import annotations

import collections
import random
from pathlib import Path

from llava15.demo.world import text as T
from llava15.demo.world.scenes import position_name
from llava15.demo.world.words import COLORS, WORDS
from llava15.demo.world.world import World, write_json, write_jsonl

SHORT = "\n" + T.SHORT_ANSWER
VQA_KINDS = ("color", "shape", "count", "exists", "where", "what_at", "size", "background")
# One question of every kind per image: accuracy weighs the kinds equally, and 50 images give 400
# questions (with 3 per image, four fresh seeds of one checkpoint spread over ±4 points).
VQA_QUESTIONS_PER_IMAGE = len(VQA_KINDS)


def _name(world: World, i: int) -> str:
    return f"synth_s{world.seed}_{i:06d}.png"


def _ten_answers(qa: T.QA, rng: random.Random) -> list[str]:
    """Ten 'annotator' answers: the true one at least 7 times (VQA accuracy 1.0), plus near-misses."""
    m = rng.choices((0, 1, 2, 3), weights=(4, 3, 2, 1))[0]
    alts = [o for o in qa.options if o != qa.short]
    extra = [T.NUMBER_WORDS[int(qa.short)] if qa.short.isdigit() and rng.random() < 0.5 else rng.choice(alts)
             for _ in range(m)]
    answers = [qa.short] * (10 - m) + extra
    rng.shuffle(answers)
    return answers


def write_vqav2(world: World, root: Path, n: int) -> dict[str, str]:
    d = root / "vqav2"
    lines, questions, annotations, kinds = [], [], [], {}
    for i in range(n):
        scene, rng = world.scene("eval-vqav2", i, d / "test2015", _name(world, i))
        image_id = i + 1
        for k, qa in enumerate(T.sample_qas(scene, rng, VQA_QUESTIONS_PER_IMAGE, kinds=VQA_KINDS)):
            qid = image_id * 1000 + k
            kinds[str(qid)] = qa.kind
            answers = _ten_answers(qa, rng)
            answer_type = "yes/no" if qa.short in ("yes", "no") else "number" if qa.short.isdigit() else "other"
            lines.append({"question_id": qid, "image": scene.image, "text": qa.question + SHORT,
                          "category": "default"})
            questions.append({"image_id": image_id, "question": qa.question, "question_id": qid})
            annotations.append({"question_id": qid, "image_id": image_id,
                                "question_type": " ".join(qa.question.lower().split()[:3]),
                                "answer_type": answer_type, "multiple_choice_answer": qa.short,
                                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                                            for j, a in enumerate(answers)]})
            world.add_text(qa.question, *answers)
    # Named like the test-dev files `llava eval` reads; the answers, which test-dev never publishes, are
    # in the official val annotation layout so the VQA accuracy can be computed locally.
    info = {"description": f"llava15 synthetic VQAv2-like set, seed {world.seed}"}
    return {
        "question_file": str(write_jsonl(d / "llava_vqav2_mscoco_test-dev2015.jsonl", lines)),
        "full_question_file": str(write_jsonl(d / "llava_vqav2_mscoco_test2015.jsonl", lines)),
        "image_folder": str(d / "test2015"),
        # not an official file: each question's kind, for the demo's per-kind accuracy
        "question_kinds": str(write_json(d / "question_kinds.json", kinds)),
        "questions": str(write_json(d / "v2_OpenEnded_mscoco_test-dev2015_questions.json", {
            "info": info, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "test-dev2015",
            "license": {}, "questions": questions})),
        "annotation_file": str(write_json(d / "v2_mscoco_test-dev2015_annotations.json", {
            "info": info, "data_type": "mscoco", "data_subtype": "test-dev2015", "license": {},
            "annotations": annotations})),
    }


def write_pope(world: World, root: Path, n: int) -> dict[str, str]:
    """POPE: per image 3 present (color, shape) objects and 3 absent ones, chosen per split:
    random (uniform), popular (most frequent in the set), adversarial (sharing a color or shape with a
    present object, the synthetic analogue of co-occurrence). Yes/no questions alternate."""
    d = root / "pope"
    scenes = [world.scene("eval-pope", i, d / "val2014", _name(world, i), objects=(3, 5)) for i in range(n)]
    freq = collections.Counter((o.color, o.shape) for s, _ in scenes for o in s.objects)
    labels: dict[str, list[dict]] = {"adversarial": [], "popular": [], "random": []}
    for scene, rng in scenes:
        present = [(o.color, o.shape) for o in scene.objects]
        yes = rng.sample(present, 3)
        absent = T.absent_pairs(scene)
        share = {p: sum(p[0] == c or p[1] == s for c, s in present) for p in absent}
        negatives = {
            "random": rng.sample(absent, 3),
            "popular": sorted(absent, key=lambda p: (-freq[p], p))[:3],
            "adversarial": sorted(absent, key=lambda p: (-share[p], -freq[p], p))[:3],
        }
        for split, rows in labels.items():
            for pos, neg in zip(yes, negatives[split]):
                for (c, s), label in ((pos, "yes"), (neg, "no")):
                    rows.append({"question_id": len(rows) + 1, "image": scene.image,
                                 "text": f"Is there {T.a(f'{c} {s}')} in the image?", "label": label})
    out = {"image_folder": str(d / "val2014"), "annotation_dir": str(d / "coco")}
    lines = []
    for k, (split, rows) in enumerate(labels.items()):
        out[f"annotation_{split}"] = str(write_jsonl(d / "coco" / f"coco_pope_{split}.json", rows))
        # As in the official llava_pope_test.jsonl: label-file ids offset by 10,000,000 per split.
        lines += [{"question_id": k * 10_000_000 + r["question_id"], "image": r["image"],
                   "text": r["text"] + SHORT, "category": split} for r in rows]
        world.add_text(*(r["text"] for r in rows))
    out["question_file"] = str(write_jsonl(d / "llava_pope_test.jsonl", lines))
    return out


def _mme_pair(task: str, scene, rng: random.Random) -> tuple[str, str]:
    """(yes question, no question) for one MME subtask, without the ' Please answer yes or no.'."""
    o = rng.choice(scene.objects)
    if task == "existence":
        c, s = rng.choice([p for p in T.absent_pairs(scene) if p[0] == o.color or p[1] == o.shape])
        return f"Is there {T.a(o.name)} in this image?", f"Is there {T.a(f'{c} {s}')} in this image?"
    if task == "count":
        k = len(scene.objects)
        wrong = k + rng.choice((-1, 1)) if k > 1 else k + 1
        return (f"Are there {T.NUMBER_WORDS[k]} shapes in this image?",
                f"Are there {T.NUMBER_WORDS[wrong]} shapes in this image?")
    if task == "position":
        other = rng.choice([position_name(r, c) for r in range(3) for c in range(3)
                            if position_name(r, c) != o.position])
        return f"Is the {o.name} {T.where(o.position)}?", f"Is the {o.name} {T.where(other)}?"
    if task == "color":
        unique = [x for x in scene.objects if sum(y.shape == x.shape for y in scene.objects) == 1]
        o = rng.choice(unique or [o])
        c = rng.choice([c for c in COLORS if c != o.color])
        if not unique:  # two objects share the shape: "the star" would be ambiguous
            return f"Is there {T.a(o.name)} in this image?", f"Is there {T.a(f'{c} {o.shape}')} in this image?"
        return f"Is the {o.shape} {o.color}?", f"Is the {o.shape} {c}?"
    w = scene.words[0]
    other = rng.choice([x for x in WORDS if x != w.text and len(x) == len(w.text)] or [WORDS[0]])
    return f'Is the word in the image "{w.text}"?', f'Is the word in the image "{other}"?'


def write_mme(world: World, root: Path, n: int) -> dict[str, str]:
    d = root / "MME"
    bench = d / "MME_Benchmark_release_version"
    tasks = ("existence", "count", "position", "color", "OCR")
    lines = []
    for task in tasks:
        for i in range(max(1, n // len(tasks))):
            kw = {"words": (0.0, 1.0, 0.0)} if task == "OCR" else {}
            scene, rng = world.scene(f"eval-mme-{task}", i, bench / task, _name(world, i), **kw)
            yes_q, no_q = _mme_pair(task, scene, rng)
            qa_lines = [f"{yes_q} Please answer yes or no.\tYes", f"{no_q} Please answer yes or no.\tNo"]
            (bench / task / _name(world, i).replace(".png", ".txt")).write_text("\n".join(qa_lines) + "\n")
            rel = f"{task}/{scene.image}"
            lines += [{"question_id": rel, "image": rel, "text": q + SHORT, "category": task} for q in (yes_q, no_q)]
            world.add_text(yes_q, no_q)
    return {"question_file": str(write_jsonl(d / "llava_mme.jsonl", lines)), "image_folder": str(bench),
            "gt_dir": str(bench)}


def write_textvqa(world: World, root: Path, n: int) -> dict[str, str]:
    """TextVQA with OCR tokens in the prompt (LLaVA-1.5's setting): the tokens are the rendered words in
    reading order; the annotation question is lowercase, the prompt's first line capitalised."""
    d = root / "textvqa"
    lines, data = [], []
    for i in range(n):
        image_id = f"s{world.seed}t{i:06d}"
        scene, rng = world.scene("eval-textvqa", i, d / "train_images", f"{image_id}.png", words=(0.0, 0.6, 0.4))
        qa = T.sample_qas(scene, rng, 1, kinds=("ocr_word",), ocr=True)[0]
        question = qa.question[0].lower() + qa.question[1:]
        tokens = [w.text for w in scene.words]
        answers = _ten_answers(qa, rng)
        text = f"{question.capitalize()}\nReference OCR token: {', '.join(tokens)}{SHORT}"
        lines.append({"question_id": image_id, "image": scene.image, "text": text, "category": "default"})
        data.append({"question": question, "image_id": image_id, "image_classes": [], "flickr_original_url": "",
                     "flickr_300k_url": "", "image_width": scene.width, "image_height": scene.height,
                     "answers": answers, "question_tokens": question.rstrip("?").split(), "question_id": i + 1,
                     "set_name": "val", "image_name": image_id, "image_path": f"train/{image_id}.png",
                     "ocr_tokens": tokens})
        world.add_text(text, *answers)
    ann = {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": data}
    return {"question_file": str(write_jsonl(d / "llava_textvqa_val_v051_ocr.jsonl", lines)),
            "image_folder": str(d / "train_images"),
            "annotation_file": str(write_json(d / "TextVQA_0.5.1_val.json", ann))}
