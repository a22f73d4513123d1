"""Chat templates as a table: a conversation -> exact prompt string, cut into supervised/masked segments.

`get_template(name)` looks a name up in `TEMPLATES` (unknown names raise listing the known ones).
`Template.segments(messages, add_generation_prompt)` returns `Segment(text, supervised)` pieces whose
concatenation is `Template.render(...)`; tokenization builds ids and labels from these pieces, so the
label mask is never re-derived by splitting strings. Supervised = each assistant answer with the
separator that ends it (`" answer</s>"` for vicuna_v1, `"answer<|im_end|>"` for chatml).

`vicuna_v1`/`llava_v1`/`plain` reproduce the original LLaVA `conversation.py` strings exactly
(docs/models.md lists every template). `hf_chat_template` derives the segments from a tokenizer's own Jinja chat template by
rendering sentinel contents and splitting at them, and checks the result renders equal to
`apply_chat_template` on the real contents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llava15.data.conversation import IMAGE_TOKEN, DataError, Message

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
LLAVA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the human's questions.")
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@dataclass(frozen=True)
class Segment:
    text: str
    supervised: bool


@dataclass(frozen=True)
class Template:
    """One chat format. `{content}` in the *_fmt strings is replaced by the message text."""

    name: str
    system: str = ""
    """Default system prompt, used when the conversation has no system message ("" = none)."""
    stop_strings: list[str] = field(default_factory=list)
    bos: bool = False
    """Prepend the tokenizer's BOS id (the original's `tokenizer_image_token` keeps one BOS)."""
    style: str = "turns"
    """`turns` (the format strings below) or `plain` (stage-1 captioning: `<image>` + caption + `\\n`)."""
    prefix: str = ""
    system_fmt: str = "{content}"
    user_fmt: str = "{content}"
    assistant_header: str = ""
    """Masked text before an answer; also the generation prompt."""
    assistant_fmt: str = "{content}"
    """Supervised: the answer with its end-of-turn marker."""
    assistant_tail: str = ""
    """Masked text after the end-of-turn marker (chatml's newline)."""
    system_in_first_user: bool = False
    strip_content: bool = False

    def render(self, messages: list[Message], add_generation_prompt: bool = False) -> str:
        return "".join(s.text for s in self.segments(messages, add_generation_prompt))

    def segments(self, messages: list[Message], add_generation_prompt: bool = False) -> list[Segment]:
        system, turns = _split_system(messages, self.system)
        if self.style == "plain":
            return _plain_segments(turns, add_generation_prompt)
        out = [Segment(self.prefix, False)] if self.prefix else []
        first_user_extra = ""
        if system and self.system_in_first_user:
            first_user_extra = system + "\n\n"
        elif system:
            out.append(Segment(self.system_fmt.format(content=self._c(system)), False))
        for i, m in enumerate(turns):
            text = self._c(m.content)
            if m.role == "user":
                out.append(Segment(self.user_fmt.format(content=(first_user_extra if i == 0 else "") + text),
                                   False))
            else:
                out.append(Segment(self.assistant_header, False))
                out.append(Segment(self.assistant_fmt.format(content=text), True))
                if self.assistant_tail:
                    out.append(Segment(self.assistant_tail, False))
        if add_generation_prompt:
            out.append(Segment(self.assistant_header, False))
        return [s for s in out if s.text]

    def _c(self, text: str) -> str:
        return text.strip() if self.strip_content else text


def _split_system(messages: list[Message], default: str) -> tuple[str, list[Message]]:
    """System text and the user/assistant turns, checked to alternate starting with the user.

    As the original `preprocess_v1`, one leading assistant turn (a record starting with `gpt`) is
    dropped rather than rejected.
    """
    system, turns = default, list(messages)
    if turns and turns[0].role == "system":
        system, turns = turns[0].content, turns[1:]
    if turns and turns[0].role == "assistant":
        turns = turns[1:]
    for i, m in enumerate(turns):
        want = "user" if i % 2 == 0 else "assistant"
        if m.role != want:
            raise DataError(f"message {i} is from {m.role} but should be from {want} "
                            "(turns must alternate user/assistant after an optional system message)",
                            field=f"conversations[{i}]", reason="roles")
    return system, turns


def _plain_segments(turns: list[Message], add_generation_prompt: bool) -> list[Segment]:
    """Stage 1 (`preprocess_plain`): the instruction is dropped, only its images and the caption stay."""
    if add_generation_prompt:  # the original's get_prompt for PLAIN: text + "\n"
        return [Segment(turns[0].content + "\n", False)] if turns else []
    if len(turns) != 2 or IMAGE_TOKEN not in turns[0].content:
        raise DataError("the plain (stage-1) template needs exactly one user turn with <image> and one "
                        f"assistant turn; got {len(turns)} turn(s)", field="conversations",
                        reason="template")
    images = IMAGE_TOKEN * turns[0].content.count(IMAGE_TOKEN)
    return [Segment(images, False), Segment(turns[1].content + "\n", True)]


def _vicuna(name: str, system: str) -> Template:
    return Template(name, system, ["</s>"], bos=True, system_fmt="{content} ", user_fmt="USER: {content} ",
                    assistant_header="ASSISTANT:", assistant_fmt=" {content}</s>")


def _chatml(name: str, system: str) -> Template:
    return Template(name, system, ["<|im_end|>"], system_fmt="<|im_start|>system\n{content}<|im_end|>\n",
                    user_fmt="<|im_start|>user\n{content}<|im_end|>\n",
                    assistant_header="<|im_start|>assistant\n", assistant_fmt="{content}<|im_end|>",
                    assistant_tail="\n")


_LLAMA3_HEADER = "<|start_header_id|>{role}<|end_header_id|>\n\n"

TEMPLATES: dict[str, Template] = {
    "plain": Template("plain", "", ["\n"], bos=True, style="plain"),
    "vicuna_v1": _vicuna("vicuna_v1", VICUNA_SYSTEM),
    "llava_v1": _vicuna("llava_v1", LLAVA_SYSTEM),
    "llama3": Template(
        "llama3", "", ["<|eot_id|>", "<|end_of_text|>"], prefix="<|begin_of_text|>",
        system_fmt=_LLAMA3_HEADER.format(role="system") + "{content}<|eot_id|>",
        user_fmt=_LLAMA3_HEADER.format(role="user") + "{content}<|eot_id|>",
        assistant_header=_LLAMA3_HEADER.format(role="assistant"), assistant_fmt="{content}<|eot_id|>",
        strip_content=True),
    "chatml": _chatml("chatml", SMOLLM2_SYSTEM),
    "qwen2": _chatml("qwen2", "You are a helpful assistant."),
    "mistral_instruct": Template(
        "mistral_instruct", "", ["</s>"], bos=True, user_fmt="[INST] {content} [/INST]",
        assistant_fmt="{content}</s>", system_in_first_user=True),
    "phi3": Template(
        "phi3", "", ["<|end|>", "<|endoftext|>"], bos=True, system_fmt="<|system|>\n{content}<|end|>\n",
        user_fmt="<|user|>\n{content}<|end|>\n", assistant_header="<|assistant|>\n",
        assistant_fmt="{content}<|end|>", assistant_tail="\n"),
}
ALIASES = {"v1": "vicuna_v1", "v0_plain": "plain", "smollm2": "chatml", "chatml_smollm2": "chatml",
           "llama_3": "llama3", "mistral": "mistral_instruct", "phi_3": "phi3"}


def get_template(name: str, tokenizer: Any = None) -> Template:
    """The template called `name` (or an alias); `hf_chat_template` needs the tokenizer."""
    if name == "hf_chat_template":
        if tokenizer is None:
            raise ValueError("template 'hf_chat_template' is derived from a tokenizer's chat template: "
                             "pass tokenizer=...")
        return HFChatTemplate.from_tokenizer(tokenizer)
    key = ALIASES.get(name, name)
    if key not in TEMPLATES:
        known = sorted([*TEMPLATES, *ALIASES, "hf_chat_template"])
        raise ValueError(f"unknown template {name!r}; known templates: {', '.join(known)}")
    return TEMPLATES[key]


_SENTINEL = "\ue000LLAVA15_{}\ue001"


@dataclass(frozen=True)
class HFChatTemplate(Template):
    """Segments derived from `tokenizer.apply_chat_template` (any Jinja chat template).

    Each message content is replaced by a sentinel, the conversation is rendered, and the text between
    sentinels is the template's scaffolding. An answer is supervised together with the scaffolding that
    follows it up to and including the first special token (its end-of-turn marker, e.g.
    `<|im_end|>`); a template that emits none (llava-hf's) then never teaches the model to stop.
    """

    tokenizer: Any = None
    special_tokens: tuple[str, ...] = ()

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> HFChatTemplate:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template")
        specials = tuple(sorted({t for t in tokenizer.all_special_tokens if t}, key=len, reverse=True))
        probe = cls("hf_chat_template", tokenizer=tokenizer, special_tokens=specials)
        stops = []
        for seg in probe.segments([Message("user", "hi"), Message("assistant", "yo")]):
            if seg.supervised:
                tail = seg.text.split("yo", 1)[-1]
                stops = [t for t in specials if tail.endswith(t)]
        if tokenizer.eos_token and tokenizer.eos_token not in stops:
            stops.append(tokenizer.eos_token)
        return cls("hf_chat_template", stop_strings=stops, tokenizer=tokenizer, special_tokens=specials)

    def _apply(self, messages: list[Message], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in messages],
                                                  tokenize=False, add_generation_prompt=add_generation_prompt)

    def segments(self, messages: list[Message], add_generation_prompt: bool = False) -> list[Segment]:
        sentinels = [Message(m.role, _SENTINEL.format(i)) for i, m in enumerate(messages)]
        rendered = self._apply(sentinels, add_generation_prompt)
        out: list[Segment] = []
        pos, supervise_tail = 0, False
        for i, m in enumerate(messages):
            at = rendered.find(_SENTINEL.format(i), pos)
            if at < 0:
                raise DataError(f"chat template dropped message {i} ({m.role})", reason="template")
            out.extend(self._scaffold(rendered[pos:at], supervise_tail))
            out.append(Segment(m.content, m.role == "assistant"))
            pos, supervise_tail = at + len(_SENTINEL.format(i)), m.role == "assistant"
        out.extend(self._scaffold(rendered[pos:], supervise_tail))
        out = [s for s in out if s.text]
        expected = self._apply(messages, add_generation_prompt)
        got = "".join(s.text for s in out)
        if got != expected:
            at = next((k for k, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
            raise DataError("chat template transforms message contents, segments cannot be derived: "
                            f"first difference at char {at}: {got[at:at + 30]!r} vs {expected[at:at + 30]!r}",
                            reason="template")
        return out

    def _scaffold(self, text: str, after_answer: bool) -> list[Segment]:
        if not after_answer:
            return [Segment(text, False)]
        hits = [(text.find(t), t) for t in self.special_tokens if t in text]
        if not hits:
            return [Segment(text, False)]
        at, tok = min(hits, key=lambda h: (h[0], -len(h[1])))
        if text[:at].strip():  # the first special token belongs to the next turn, not this answer
            return [Segment(text, False)]
        end = at + len(tok)
        return [Segment(text[:end], True), Segment(text[end:], False)]
