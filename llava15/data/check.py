"""`llava15 data check` and `llava15 data show`: validate a data file, and render records exactly.

`run_check(args)` streams every record (JSON list, JSONL, `datasets`/parquet; `data.tolerant_reader`)
and reports: how many records are good and bad, per problem kind a count, up to five examples (record
id and line) and the first message (a line that is not UTF-8 or not JSON, missing or unreadable image,
`<image>` count, unknown role, role order, no assistant turn, empty text, path escaping the image root,
over-length with image tokens counted, literal special tokens, ...), the modality split and turn
statistics. It always checks the structure and the role order (the template's turn rules); image files
only with `--images`; token lengths and the supervised-token fraction (histogram PNG with
`--histogram`) only with `--tokenizer`. The report says which checks ran and which did not, and why.
It returns 1 when the share of bad records exceeds `max_problem_fraction` (or none could be read);
`--json` prints it as one JSON object.

`run_show(args)` prints each record as the exact training prompt with the supervised spans
highlighted, or with `--format json` one line per record `{"id", "prompt", "input_ids", "labels"}`
(each image as one `<image>` id; a rejected record or unreadable line prints `{"id", "error"}`); with
`--inference`, the generation prompt of the first user turn and its ids. Args fields: `file`, `images`,
`tokenizer`, `template`, `format`, `json`, `inference`, `max_problem_fraction`, `histogram` (and
optionally `model_max_length`, `num_image_tokens`, `limit`).
"""

from __future__ import annotations

import functools
import json
import sys
from collections import Counter
from typing import Any

from llava15.config import DEFAULT_TEMPLATE
from llava15.data.conversation import IMAGE_TOKEN, DataError, Message, move_images_to_front
from llava15.data.dataset import Problems, check_record, image_path
from llava15.data.formats import record_images
from llava15.data.tolerant_reader import Item, read_items


@functools.lru_cache(maxsize=4)
def _load_tokenizer(path: str | None) -> Any:
    if not path:
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OSError(f"--tokenizer {path}: cannot load a tokenizer from it ({first})") from None


def image_token_id_for(tokenizer: Any) -> int:
    """The tokenizer's `<image>` id, or the id `<image>` would get when added (HF layout: 32000)."""
    tid = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid is not None:
        return tid
    return len(tokenizer)


def _open_images(conv: Any, root: str, source: str) -> None:
    from PIL import Image

    for j, rel in enumerate(conv.images):
        if not isinstance(rel, str):
            continue
        path = image_path(root, rel, conv.id, source)
        try:
            with Image.open(path) as im:
                im.size  # noqa: B018 - header decoded: the file is an image
        except Exception as exc:
            raise DataError(f"cannot read image {str(path)!r}: {type(exc).__name__}: {exc}", record_id=conv.id,
                            field=f"image[{j}]", reason="unreadable_image", source=source) from exc


def _label(item: Item, record: Any) -> str:
    rid = record.get("id") if isinstance(record, dict) else None
    name = str(rid) if rid is not None else f"#{item.index}"
    return f"{name} (line {item.line})" if item.line is not None else name


def _checks_run(root: str | None, tokenizer: Any) -> tuple[list[str], dict[str, str]]:
    ran = ["JSON/UTF-8 of every line", "record structure", "role order"]
    skipped = {}
    if root is not None:
        ran += ["image files exist and open"]
    else:
        skipped["image files"] = "no --images folder given"
    if tokenizer is not None:
        ran += ["token lengths (image tokens counted)", "special tokens in the text"]
    else:
        skipped["token lengths and special tokens"] = "no --tokenizer given"
    return ran, skipped


def run_check(args: Any) -> int:
    tokenizer = _load_tokenizer(getattr(args, "tokenizer", None))
    template = getattr(args, "template", None) or DEFAULT_TEMPLATE
    max_len = getattr(args, "model_max_length", None) or 2048
    n_img_tok = getattr(args, "num_image_tokens", None) or 576
    source, root = str(args.file), getattr(args, "images", None)
    problems, modality, turns = Problems(), Counter(), Counter()
    lengths, supervised, tokens, total, truncated, complete = [], 0, 0, 0, 0, True
    from llava15.data.templates import get_template

    if tokenizer is not None:
        from llava15.data.tokenization import IGNORE_INDEX, encode_conversation

        tmpl, image_id = get_template(template, tokenizer), image_token_id_for(tokenizer)
    else:  # role order follows the template's turn rules; a tokenizer's own template needs the tokenizer
        tmpl = get_template(DEFAULT_TEMPLATE if template == "hf_chat_template" else template)
    for item in read_items(args.file):
        total += 1
        if item.error is not None:
            problems.add(item.error, _label(item, None))
            complete = complete and not item.fatal
            continue
        record = item.record
        try:
            conv = check_record(record, item.index, source, root, check_files=root is not None)
            if root is not None:
                _open_images(conv, root, source)
            if tokenizer is not None:
                enc = encode_conversation(conv, tokenizer, tmpl, image_id, max_len, n_img_tok)
                lengths.append(enc.expanded_length(n_img_tok))
                supervised += sum(1 for x in enc.labels if x != IGNORE_INDEX)
                tokens += lengths[-1]
                truncated += enc.truncated
            else:
                tmpl.segments(move_images_to_front(conv).messages)
        except DataError as err:
            label = _label(item, record)
            problems.add(DataError(err.detail, record_id=label, field=err.field, reason=err.reason,
                                   source=source), label)
            continue
        n = len(record_images(record))
        modality["text-only" if n == 0 else "one image" if n == 1 else "several images"] += 1
        turns[sum(1 for m in conv.messages if m.role == "assistant")] += 1
    bad = problems.total
    ran, skipped = _checks_run(root, tokenizer)
    report = {
        "file": source, "records": total, "good": total - bad, "bad": bad, "complete": complete,
        "checks": ran, "not_checked": skipped, "template": tmpl.name,
        "problems": {k: {"count": v, "examples": problems.examples[k],
                         "message": problems.messages[problems.examples[k][0]]}
                     for k, v in sorted(problems.counts.items())},
        "modality": dict(modality), "rounds": {str(k): v for k, v in sorted(turns.items())},
    }
    if tokenizer is not None:
        report.update(truncated=truncated, supervised_fraction=round(supervised / tokens, 4) if tokens else 0.0,
                      tokens={"max": max(lengths, default=0), "mean": round(sum(lengths) / max(len(lengths), 1), 1)})
        if getattr(args, "histogram", None) and lengths:
            _histogram(lengths, args.histogram, max_len)
            report["histogram"] = str(args.histogram)
    threshold = getattr(args, "max_problem_fraction", None)
    threshold = 0.0 if threshold is None else threshold
    fraction = bad / total if total else 0.0
    report["problem_fraction"] = round(fraction, 6)
    report["max_problem_fraction"] = threshold
    report["ok"] = fraction <= threshold and total > 0 and complete
    if getattr(args, "json", False) or getattr(args, "format", "text") == "json":
        print(json.dumps(report, ensure_ascii=False))
    else:
        _print_report(report)
    return 0 if report["ok"] else 1


def _print_report(r: dict) -> None:
    print(f"{r['file']}: {r['records']} records, {r['good']} good, {r['bad']} bad")
    print(f"checked: {', '.join(r['checks'])} (template {r['template']})")
    for what, why in r["not_checked"].items():
        print(f"not checked: {what} ({why})")
    for kind, p in r["problems"].items():
        print(f"  {kind:<18} {p['count']:>8}  e.g. {', '.join(p['examples'])}\n      {p['message']}")
    if not r["complete"]:
        print("the file could not be read to its end: the records after the bad_json line are not counted")
    print("modality: " + ", ".join(f"{k} {v}" for k, v in r["modality"].items()))
    print("assistant turns per record: " + ", ".join(f"{k}: {v}" for k, v in r["rounds"].items()))
    if "tokens" in r:
        print(f"tokens (images counted): max {r['tokens']['max']}, mean {r['tokens']['mean']}; "
              f"truncated {r['truncated']}; supervised fraction {r['supervised_fraction']}")
    if "histogram" in r:
        print(f"length histogram: {r['histogram']}")
    verdict = "OK" if r["ok"] else "FAILED"
    print(f"{verdict}: {r['problem_fraction']:.4%} bad records (--max-problem-fraction {r['max_problem_fraction']:.4%})")


def _histogram(lengths: list[int], path: str, max_len: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(lengths, bins=50)
    ax.axvline(max_len, color="red", linestyle="--", label=f"model_max_length {max_len}")
    ax.set_xlabel("tokens per sample (image tokens counted)")
    ax.set_ylabel("records")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_show(args: Any) -> int:
    from llava15.data.formats import record_to_conversation
    from llava15.data.templates import get_template
    from llava15.data.tokenization import IGNORE_INDEX, encode_conversation, encode_prompt

    tokenizer = _load_tokenizer(args.tokenizer)
    if tokenizer is None:
        raise SystemExit("data show needs --tokenizer DIR")
    tmpl = get_template(getattr(args, "template", None) or DEFAULT_TEMPLATE, tokenizer)
    image_id, as_json = image_token_id_for(tokenizer), getattr(args, "format", "text") == "json"
    root, limit, source = getattr(args, "images", None), getattr(args, "limit", None), str(args.file)
    color = sys.stdout.isatty()
    for item in read_items(args.file):
        index, record = item.index, item.record
        if limit and index >= limit:
            break
        rid = str(record.get("id", index)) if isinstance(record, dict) else f"line {item.line}"
        try:
            if item.error is not None:
                raise item.error
            conv = (check_record(record, index, source, root) if root else
                    record_to_conversation(record, index, source))
            if getattr(args, "inference", False):  # as trained: a lone <image> moved to the front
                msgs: list[Message] = move_images_to_front(conv).messages
                msgs = msgs[:next(i for i, m in enumerate(msgs) if m.role == "user") + 1]
                prompt = tmpl.render(msgs, add_generation_prompt=True)
                ids = encode_prompt(msgs, tokenizer, tmpl, image_id)
                out = {"id": rid, "prompt": prompt, "input_ids": ids}
            else:
                enc = encode_conversation(conv, tokenizer, tmpl, image_id)
                prompt = tmpl.render(move_images_to_front(conv).messages)
                out = {"id": rid, "prompt": prompt, "input_ids": enc.input_ids, "labels": enc.labels}
        except DataError as err:
            out = {"id": rid, "error": str(err.with_source(source))}
        if as_json:
            print(json.dumps(out, ensure_ascii=False))
        elif "error" in out:
            print(f"### {rid}: REJECTED: {out['error']}\n")
        elif "labels" not in out:
            print(f"### {rid} (generation prompt, {len(out['input_ids'])} tokens)\n{out['prompt']}\n{out['input_ids']}\n")
        else:
            print(f"### {rid} ({len(out['input_ids'])} tokens, "
                  f"{sum(x != IGNORE_INDEX for x in out['labels'])} supervised)")
            print(_highlight(out["input_ids"], out["labels"], tokenizer, image_id, color) + "\n")
    return 0


def _highlight(ids: list[int], labels: list[int], tokenizer: Any, image_id: int, color: bool) -> str:
    """The decoded prompt with supervised runs marked (green on a terminal, ⟦…⟧ otherwise).

    Text between images is decoded by prefixes at each run boundary, so a run that starts with a
    space piece keeps its space (decoding a run alone would drop it).
    """
    on, off = ("\x1b[1;32m", "\x1b[0m") if color else ("⟦", "⟧")
    parts: list[str] = []
    chunk: list[tuple[int, bool]] = []

    def flush() -> None:
        toks = [t for t, _ in chunk]
        cuts = [k for k in range(1, len(chunk)) if chunk[k][1] != chunk[k - 1][1]] + [len(chunk)]
        prev_text, prev = "", 0
        for cut in cuts:
            text = tokenizer.decode(toks[:cut])
            piece = text[len(prev_text):]
            parts.append(on + piece + off if chunk[prev][1] else piece)
            prev_text, prev = text, cut
        chunk.clear()

    for tid, label in zip(ids, labels):
        if tid == image_id:
            flush()
            parts.append(IMAGE_TOKEN)
        else:
            chunk.append((tid, label != -100))
    flush()
    return "".join(parts)
