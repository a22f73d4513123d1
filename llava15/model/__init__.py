"""The model layer: assembly (`build`), tokenizer surgery (`tokenizer`), freezing (`freeze`),
save/load (`load`), layout conversion (`convert`) and LoRA (`lora`). Import the submodules directly;
this package imports nothing itself, so `import llava15.model` stays cheap."""
