"""Evaluation on LLaVA-1.5's 12 benchmarks, exactly as the paper measured (``spec/eval.md``).

- ``metrics`` / ``vqa_normalize``: pure functions = the official scorers, quirks included;
- ``benchmarks``: one module per benchmark (official files → prompts → answer records → score or
  submission file), in an explicit registry;
- ``judge``: GPT judge over any OpenAI-compatible endpoint, cached on disk (LLaVA-Bench, MM-Vet);
- ``hub``: the lmms-lab Hub datasets (local snapshots or hub ids) and ``llava15 eval data``;
- ``bootstrap`` (95 % intervals, paired differences) and ``compare`` (``llava15 eval compare``);
- ``runner`` (``llava15 eval run``), ``score`` (``llava15 eval score``), ``report`` (Table 2 layout).

Submodules are imported where used; importing ``llava15.eval`` loads nothing heavy.
"""
