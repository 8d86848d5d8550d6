"""Generators: one contract for "make images from prompts and seeds", the samplers, and the challenge-folder writer.

* :mod:`~msdm.generators.base` — the :class:`Generator` contract (``generate(prompts, seeds)`` → float images in
  [0, 1], image ``i`` from seed ``seeds[i]``; ``info()`` → provenance) and the prompt-major seed rule;
* :mod:`~msdm.generators.samplers` — the sampler registry (names, scheduler factories, default steps): a new sampler
  is one entry there, and every command's ``--sampler`` choices follow;
* adapters: :class:`MSDMGenerator` (an MSDM pipeline), :class:`StockPipelineGenerator` / :func:`load_lora_generator`
  (Kandinsky 2.2 and FLUX with LoRA), :class:`ModuleGenerator` (a training module), :class:`RenderGenerator` (the
  synthetic-scene renderers);
* :mod:`~msdm.generators.writer` — the one writer of challenge-layout folders (sharded over ranks, with provenance);
  :mod:`~msdm.generators.sharding` — which images a rank makes.

``msdm generate``, ``msdm utility``, ``msdm predict``, the metric / adherence / sample-grid callbacks, the quickstart
and the benches go through this package. A new generator is one adapter class here (``generate`` + ``info``).
"""

# Names are imported on first use (PEP 562): `from msdm.generators.samplers import sampler_choices` in a command's
# options must not load torch, diffusers and every adapter (issue 23: `msdm --help` within 3 s).
_HOMES = {
    "base": ("SEED_RULE", "Generator", "batched", "prompt_major", "seeded_generators"),
    "lora": ("StockPipelineGenerator", "load_lora_generator"),
    "module": ("ModuleGenerator",),
    "msdm_pipeline": ("MSDMGenerator",),
    "render": ("RenderGenerator",),
    "samplers": ("SAMPLERS", "Sampler", "default_steps", "make_sampler", "register_sampler", "sampler_choices",
                 "sampler_name"),
    "sharding": ("default_device", "env_rank_world", "expand_prompts", "shard"),
    "writer": ("ChallengeFolderWriter", "finish_sharded_output", "folder_complete", "images_to_uint8",
               "shard_record_path", "write_challenge_folder"),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str):
    if name in _HOME:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_HOME])


__all__ = [
    "SAMPLERS", "SEED_RULE", "ChallengeFolderWriter", "Generator", "MSDMGenerator", "ModuleGenerator",
    "RenderGenerator", "Sampler", "StockPipelineGenerator", "batched", "default_device", "default_steps",
    "env_rank_world", "expand_prompts", "finish_sharded_output", "folder_complete", "images_to_uint8",
    "load_lora_generator", "make_sampler", "prompt_major", "register_sampler", "sampler_choices", "sampler_name",
    "seeded_generators", "shard", "shard_record_path", "write_challenge_folder",
]
