"""Training: the recipe runner (`run.train(cfg)`, CLI `llava15 train`) and its small components.

`run` (setup → loop → save), `setup` (model/data for a recipe, final save), `batches` (which samples
each rank's micro-batches hold), `loop` (one optimizer step), `loss` (loss on labelled positions
only), `optim` (AdamW groups, cosine schedule), `checkpoint` (atomic resumable state, projector file),
`distributed` (torchrun + FSDP2), `logging` (bar, JSONL, TensorBoard, W&B). Nothing is imported here,
so `import llava15.train` stays cheap.
"""
