"""Tokenizer surgery, Vicuna's tokenizer config and the chat templates written next to checkpoints.

Contract:
- `add_image_token(tokenizer) -> int` adds `<image>` as one special, non-normalized token (so the
  text around it is never merged into it), adds `<pad>` when the tokenizer has no pad token (what the
  HF LLaVA conversion does: Vicuna ships none), and returns the id of `<image>`. Idempotent.
- `vicuna_tokenizer_config(model_max_length)`: Vicuna-v1.5's `tokenizer_config.json`.
- `copy_sentencepiece_model(tokenizer, out_dir)` writes the `tokenizer.model` a tokenizer was loaded
  from next to the files `save_pretrained` wrote (`save_pretrained` of a fast Llama tokenizer writes none itself).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from transformers import AddedToken, PreTrainedTokenizerBase

from llava15.data.conversation import IMAGE_TOKEN

log = logging.getLogger(__name__)

PAD_TOKEN = "<pad>"
SP_MODEL_FILE = "tokenizer.model"


def add_image_token(tokenizer: PreTrainedTokenizerBase) -> int:
    """Add `<image>` (and `<pad>` when missing) as special tokens; return the `<image>` id."""
    vocab = tokenizer.get_vocab()
    if IMAGE_TOKEN not in vocab:
        tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": AddedToken(PAD_TOKEN, special=True, normalized=False)})
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    # The processor (and vLLM) find the id with encode("<image>")[0] after dropping BOS: it must be
    # exactly one token, or every image placeholder count is off.
    ids = tokenizer.encode(IMAGE_TOKEN, add_special_tokens=False)
    if ids != [image_id]:
        raise ValueError(f"tokenizer splits {IMAGE_TOKEN!r} into ids {ids}, expected the single id {image_id}")
    return int(image_id)


def vicuna_tokenizer_config(model_max_length: int) -> dict:
    """Vicuna-v1.5's tokenizer_config.json (spec fixtures/vicuna_tokenizer), as written by transformers 4."""

    def special(content: str) -> dict:
        return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": False,
                "rstrip": False, "single_word": False}

    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": special("<s>"),
        "clean_up_tokenization_spaces": False,
        "eos_token": special("</s>"),
        "legacy": False,
        "model_max_length": model_max_length,
        "pad_token": None,
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": special("<unk>"),
    }


def sentencepiece_model_path(tokenizer: PreTrainedTokenizerBase) -> Path | None:
    """The `tokenizer.model` file the tokenizer was loaded from, if it had one."""
    candidates = [getattr(tokenizer, "vocab_file", None), tokenizer.init_kwargs.get("vocab_file")]
    name_or_path = getattr(tokenizer, "name_or_path", None)
    if name_or_path:
        candidates.append(str(Path(name_or_path) / SP_MODEL_FILE))
    for cand in candidates:
        if cand and Path(cand).is_file() and Path(cand).name.endswith(".model"):
            return Path(cand)
    return None


def copy_sentencepiece_model(tokenizer: PreTrainedTokenizerBase, out_dir: str | Path) -> bool:
    """Copy the tokenizer's SentencePiece `tokenizer.model` into `out_dir`; False when it has none."""
    src = sentencepiece_model_path(tokenizer)
    if src is None:
        log.warning("tokenizer %s has no SentencePiece model file; %s not written (slow/original "
                    "tokenizers will not load from %s)", tokenizer.name_or_path, SP_MODEL_FILE, out_dir)
        return False
    dst = Path(out_dir) / SP_MODEL_FILE
    if src.resolve() != dst.resolve():
        shutil.copyfile(src, dst)
    return True


# Chat templates written next to checkpoints, for HF processors and vLLM, generated from the template
# table in llava15.data.templates so both render the same strings. They start with BOS where the
# template has one: the tokenizer's apply_chat_template never adds special tokens, and the processor's
# skips them when the text starts with BOS, so either way the ids begin with exactly one BOS. A list
# content puts its images first as "<image>\n", as the original preprocess_multimodal does.
_CONTENT_MACRO = """\
{%- macro content(m) -%}
{%- if m['content'] is string -%}{{- m['content'] TRIM -}}
{%- else -%}
{%- for p in m['content'] if p['type'] == 'image' -%}{{- '<image>\\n' -}}{%- endfor -%}
{{- m['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('\\n') TRIM -}}
{%- endif -%}
{%- endmacro -%}
"""
_TURNS = """\
{%- set sys = SYSTEM -%}{%- set turns = messages -%}
{%- if messages and messages[0]['role'] == 'system' -%}
{%- set sys = content(messages[0]) -%}{%- set turns = messages[1:] -%}
{%- endif -%}
{{- BOS -}}{{- PREFIX -}}
{%- if sys and not SYS_IN_USER -%}{{- SYS_PRE + sys + SYS_POST -}}{%- endif -%}
{%- for m in turns -%}
{%- if m['role'] == 'user' -%}
{{- USER_PRE + ((sys + '\\n\\n') if (SYS_IN_USER and sys and loop.first) else '') + content(m) + USER_POST -}}
{%- elif m['role'] == 'assistant' -%}
{{- HEADER + ANSWER_PRE + content(m) + ANSWER_POST + TAIL -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- HEADER -}}{%- endif -%}
"""
_PLAIN = """\
{%- set turns = messages[1:] if (messages and messages[0]['role'] == 'system') else messages -%}
{{- BOS -}}
{%- if add_generation_prompt -%}
{%- if turns -%}{{- content(turns[0]) + '\\n' -}}{%- endif -%}
{%- else -%}
{%- for m in turns -%}
{%- if m['role'] == 'user' -%}
{%- if m['content'] is string -%}{{- '<image>' * ((m['content'].split('<image>') | length) - 1) -}}
{%- else -%}{%- for p in m['content'] if p['type'] == 'image' -%}{{- '<image>' -}}{%- endfor -%}{%- endif -%}
{%- elif m['role'] == 'assistant' -%}{{- content(m) + '\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
"""


def _lit(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def chat_template_for(template: str) -> str:
    """Jinja chat template that renders the llava15 template `template` (llava15.data.templates)."""
    from llava15.data.templates import get_template

    t = get_template(template)  # unknown names raise, listing the known ones
    if not hasattr(t, "assistant_fmt") or type(t).__name__ != "Template":
        raise ValueError(f"template {template!r} is not a table template; keep the tokenizer's own")
    pre_post = {}
    for key, fmt in (("SYS", t.system_fmt), ("USER", t.user_fmt), ("ANSWER", t.assistant_fmt)):
        pre, _, post = fmt.partition("{content}")
        pre_post[f"{key}_PRE"], pre_post[f"{key}_POST"] = _lit(pre), _lit(post)
    values = {
        "BOS": "bos_token" if t.bos else "''",
        "PREFIX": _lit(t.prefix),
        "SYSTEM": _lit(t.system),
        "SYS_IN_USER": "true" if t.system_in_first_user else "false",
        "HEADER": _lit(t.assistant_header),
        "TAIL": _lit(t.assistant_tail),
        **pre_post,
    }
    body = _PLAIN if t.style == "plain" else _TURNS
    values["TRIM"] = "| trim" if t.strip_content else ""
    text = _CONTENT_MACRO + body
    for key in sorted(values, key=len, reverse=True):
        text = re.sub(rf"\b{key}\b", lambda _m, v=values[key]: v, text)
    return text
