"""Training records in the original LLaVA format (docs/data.md), one builder per data kind.

Stage 1 (`pretrain_record`) mirrors the 558K captions: one human turn holding a caption instruction
and `<image>` (either order, as in the 558K file; the `plain` template drops the instruction), one gpt
turn with a short caption.

Stage 2 (`finetune_records`) mirrors Table 7's mixture, per scene:
- `vqa`   VQAv2/GQA-like: 6-10 short-answer QA pairs of one image merged into one conversation, the
          format prompt on the first human turn only (many pairs per image: each sample's fixed cost,
          system prompt and image tokens, then buys more supervised answers);
- `conv` / `detail`  LLaVA-Instruct-like: sentence answers, no format prompt;
- `ocr`   OCR-VQA-like merged short answers about the rendered words;
- `textcap`  TextCaps-like one-sentence caption with the format prompt and the OCR token line;
- `mc`    A-OKVQA-like multiple choice, one record per option order (k records for k options);
- `region`  RefCOCO/VG-like turns, each randomly one of the two directions, boxes relative to the
          padded square;
and `text_only_record` the ShareGPT-like conversations without an image.
"""

from __future__ import annotations

import random

from llava15.demo.world import text as T
from llava15.demo.world.scenes import Scene
from llava15.demo.world.text_only import text_only_turns

P_REGION = 0.5  # share of scenes that also give a region-level record
P_MC = 0.25  # share of scenes that give a multiple-choice question (then k records)


def conversation(record_id: str, image: str | None, turns: list[tuple[str, str]], *,
                 image_last: bool = False) -> dict:
    """A record: `<image>` joins the first human turn (in front, or after it when `image_last`)."""
    convs = []
    for i, (human, gpt) in enumerate(turns):
        if i == 0 and image is not None:
            human = f"{human}\n{T.IMAGE}" if image_last else f"{T.IMAGE}\n{human}"
        convs += [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]
    record: dict = {"id": record_id}
    if image is not None:
        record["image"] = image
    record["conversations"] = convs
    return record


def pretrain_record(scene: Scene, rng: random.Random) -> dict:
    instruction = rng.choice(T.CAPTION_INSTRUCTIONS)
    return conversation(scene.id, scene.image, [(instruction, T.caption(scene))],
                        image_last=rng.random() < 0.5)


def short_answer_turns(qas: list[T.QA]) -> list[tuple[str, str]]:
    """Merged VQA pairs: the format prompt follows the first question only."""
    return [(f"{qa.question}\n{T.SHORT_ANSWER}" if i == 0 else qa.question, qa.short)
            for i, qa in enumerate(qas)]


def ocr_tokens_line(scene: Scene) -> str:
    return "Reference OCR token: " + ", ".join(w.text for w in scene.words)


def finetune_records(scene: Scene, rng: random.Random) -> list[dict]:
    """All stage-2 records one training scene contributes (see the module docstring)."""
    sid, img = scene.id, scene.image
    out = [conversation(f"{sid}-vqa", img, short_answer_turns(T.sample_qas(scene, rng, rng.randint(6, 10))))]

    if rng.random() < 0.5:
        qas = T.sample_qas(scene, rng, rng.randint(2, 4))
        out.append(conversation(f"{sid}-conv", img, [(qa.question, qa.sentence) for qa in qas]))
    else:
        out.append(conversation(f"{sid}-detail", img,
                                [(rng.choice(T.DETAIL_INSTRUCTIONS), T.detailed_description(scene))]))

    if scene.words:
        qas = T.sample_qas(scene, rng, rng.randint(1, 2), ocr=True)
        out.append(conversation(f"{sid}-ocr", img, short_answer_turns(qas)))
        prompt = f"{T.ONE_SENTENCE_CAPTION}\n{ocr_tokens_line(scene)}"
        out.append(conversation(f"{sid}-textcap", img, [(prompt, T.one_sentence_caption(scene))]))

    if rng.random() < P_REGION:
        items = list(scene.objects) + list(scene.words)
        turns = []
        for item in rng.sample(items, min(len(items), rng.randint(2, 4))):
            box = scene.padded_box(item.bbox)
            if rng.random() < 0.5:
                turns.append((T.region_question(box), T.region_description(item)))
            else:
                turns.append((T.grounding_question(T.referring_expression(item)), str(box)))
        out.append(conversation(f"{sid}-region", img, turns))

    if rng.random() < P_MC:
        qa = T.sample_qas(scene, rng, 1, kinds=("color", "shape", "where", "size", "count"))[0]
        options, answer = T.multiple_choice(qa, rng)
        for k, (opts, ans) in enumerate(T.rotations(options, answer)):
            human = f"{T.format_options(qa.question, opts)}\n{T.MULTIPLE_CHOICE}"
            out.append(conversation(f"{sid}-mc{k}", img, [(human, T.LETTERS[ans])]))
    return out


def text_only_record(record_id: str, rng: random.Random) -> dict:
    return conversation(record_id, None, text_only_turns(rng, rng.randint(1, 3)))
