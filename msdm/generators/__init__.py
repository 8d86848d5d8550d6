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

from msdm.generators.base import SEED_RULE, Generator, batched, prompt_major, seeded_generators
from msdm.generators.lora import StockPipelineGenerator, load_lora_generator
from msdm.generators.module import ModuleGenerator
from msdm.generators.msdm_pipeline import MSDMGenerator
from msdm.generators.render import RenderGenerator
from msdm.generators.samplers import (
    SAMPLERS,
    Sampler,
    default_steps,
    make_sampler,
    register_sampler,
    sampler_choices,
    sampler_name,
)
from msdm.generators.sharding import default_device, env_rank_world, expand_prompts, shard
from msdm.generators.writer import (
    ChallengeFolderWriter,
    finish_sharded_output,
    folder_complete,
    images_to_uint8,
    shard_record_path,
    write_challenge_folder,
)

__all__ = [
    "SAMPLERS", "SEED_RULE", "ChallengeFolderWriter", "Generator", "MSDMGenerator", "ModuleGenerator",
    "RenderGenerator", "Sampler", "StockPipelineGenerator", "batched", "default_device", "default_steps",
    "env_rank_world", "expand_prompts", "finish_sharded_output", "folder_complete", "images_to_uint8",
    "load_lora_generator", "make_sampler", "prompt_major", "register_sampler", "sampler_choices", "sampler_name",
    "seeded_generators", "shard", "shard_record_path", "write_challenge_folder",
]
