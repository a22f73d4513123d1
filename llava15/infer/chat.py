"""`llava15 chat`: a terminal chat on the engine — multi-turn, streamed replies, images by command.

Contract: `run_chat(args)` (args from `llava15.cli._chat`). Lines typed at `USER> ` are user turns; the
reply streams after `ASSISTANT> `. Commands: `/image FILE` attaches an image to the next message,
`/clear` starts a new conversation, `/exit` (or Ctrl-D) quits; Ctrl-C during a reply stops it. The
whole history, images of earlier turns included, is sent every turn, prompted with the checkpoint's
template. Plain `input()`/`print()` only, so it works on any terminal (and under tmux in the tests).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from llava15.data.conversation import IMAGE_TOKEN, Message
from llava15.data.images import load_image

HELP = "Commands: /image FILE attaches an image, /clear starts over, /exit quits."


def run_chat(args: Any) -> int:
    try:
        import readline  # noqa: F401  (line editing and history where the platform has it)
    except ImportError:
        pass
    from llava15.infer.engine import Engine, load_generation_bundle

    bundle = load_generation_bundle(args.model, device=args.device, quantize=getattr(args, "quantize", None),
                                    fast_decode=False if getattr(args, "eager", False) else None)
    engine = Engine(bundle, template=args.template, **(bundle.decode_options or {}))
    print(f"llava15 chat: {args.model} (template {engine.template.name}). {HELP}", flush=True)
    history: list[Message] = []
    images: list[Any] = []
    pending = _attach(args.image) if args.image else None
    while True:
        try:
            line = input("USER> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return 0
        if line == "/clear":
            history, images, pending = [], [], None
            print("(conversation cleared)", flush=True)
            continue
        if line.startswith("/image"):
            pending = _attach(line[len("/image"):].strip()) or pending
            continue
        if line.startswith("/"):
            print(f"(unknown command {line.split()[0]}) {HELP}", flush=True)
            continue
        if IMAGE_TOKEN in line:
            print(f"(use /image FILE to attach images; {IMAGE_TOKEN} is reserved)", flush=True)
            continue
        content = line
        if pending is not None:  # the image goes first in its turn, as LLaVA-1.5 was trained
            content = IMAGE_TOKEN + "\n" + line
            images.append(pending)
            pending = None
        history.append(Message("user", content))
        history.append(Message("assistant", _reply(engine, history, images, args)))


def _attach(path: str) -> Any:
    if not path:
        print("(usage: /image FILE)", flush=True)
        return None
    try:
        image = load_image(Path(path).expanduser())
    except (OSError, ValueError, TypeError) as exc:
        print(f"(cannot open image {path}: {exc})", flush=True)
        return None
    print(f"(attached {path}, {image.size[0]}x{image.size[1]}; it goes with your next message)", flush=True)
    return image


def _reply(engine: Any, history: list[Message], images: list[Any], args: Any) -> str:
    print("ASSISTANT> ", end="", flush=True)
    text = ""
    try:
        for ev in engine.stream([history], [images], max_new_tokens=args.max_new_tokens,
                                temperature=args.temperature):
            sys.stdout.write(ev.delta)
            sys.stdout.flush()
            text += ev.delta
    except KeyboardInterrupt:
        print(" (stopped)", end="")
    print(flush=True)
    return text
