"""The embedded default: LLaVA-1.5's whole method on a synthetic world, on a CPU, in minutes.

`world/` (the synthetic world: scenes, texts, records, benchmark files), `vision_pretrain` (the demo's
stand-in for CLIP's pretraining), `tokenizer` (SentencePiece training), `language_probe` (retained
language ability), `common` (what the runners share), and the runners: `run` (`llava15 demo`),
`showcase` (`--llm smollm2`) and `ablations` (`--ablations`). Nothing below this package imports it.
"""
