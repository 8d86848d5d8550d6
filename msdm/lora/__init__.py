"""LoRA fine-tuning of the large generators of *Prompt to Polyp*: Kandinsky 2.2 (prior + decoder) and FLUX.1-dev.

Pure torch + diffusers + peft (no Lightning): base loading (:mod:`.bases`), adapters and targets (:mod:`.adapters`),
the training objectives (:mod:`.losses`), pipeline-identical conditioning (:mod:`.conditioning`), the per-sample
embedding cache (:mod:`.embedding_cache`), LoRA files stock diffusers loads (:mod:`.save`), and the Table 4
parameter counts on the meta device (:mod:`.param_count`, :mod:`.published`). The Lightning shells are
``lightning_modules.kandinsky_lora.KandinskyLoRAModule`` and ``lightning_modules.flux_lora.FluxLoRAModule``.
"""
