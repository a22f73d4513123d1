"""Inference: one generation engine and what is built on it.

- `engine`: `Engine(bundle)` — conversations + images in, text out (whole or streamed), batched;
  `load_generation_bundle(path)` is what `llava15.load` returns.
- `decoding`, `json_constraint`: decoding settings, sampling, stop handling, JSON-constrained output.
- `protocol`, `server`: the OpenAI-compatible HTTP server (`llava15 serve`) and the web UI in `webui/`.
- `chat`: the terminal chat (`llava15 chat`); `export`: the vLLM layout (`llava15 export --to vllm`).
"""
