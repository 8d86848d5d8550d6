"""Sample grids at validation end for any generator module (the generator contract, :mod:`msdm.generators`)."""

from __future__ import annotations

import os

import lightning.pytorch as pl
import torch

from msdm.generators import ModuleGenerator, prompt_major
from msdm.generators.module import is_generator_module
from msdm.progress import progress_bar
from msdm.provenance import save_grid

#: Sampling steps of sample grids and metric callbacks under ``fast_dev_run`` (unless set explicitly): a smoke run
#: checks that generation works, not what it draws — DDIM-150 on a CPU would take most of the run.
FAST_DEV_RUN_STEPS = 2


def generate_with_progress(trainer: pl.Trainer, generator, prompts: list[str], seeds: list[int], chunk: int,
                           desc: str, unit: str = "prompt") -> torch.Tensor:
    """``generator.generate(prompts, seeds)`` in chunks of ``chunk`` images under a progress bar (one tick per chunk),
    so the minutes of sampling a metric callback spends at validation end show (off when the Trainer has no progress
    bar, or under ``msdm --quiet``). The images are those of one call: each comes from its own seed."""
    chunk = max(1, int(chunk))
    starts = range(0, len(prompts), chunk)
    bar = progress_bar(starts, desc=desc, unit=unit, leave=False, disable=trainer.progress_bar_callback is None)
    out = [generator.generate(prompts[s:s + chunk], seeds[s:s + chunk]) for s in bar]
    return torch.cat(out) if out else torch.zeros(0, 3, 1, 1)


class SampleGrid(pl.Callback):
    """Generate images for fixed prompts every ``every_n_epochs`` validations; log them to TensorBoard and write
    ``<log_dir>/samples/epoch=XXXX.png``.

    Prompts default to the module's ``sample_prompts``, then to the DataModule's ``validation_prompts``.
    ``num_inference_steps`` defaults to the module's; under ``fast_dev_run`` to :data:`FAST_DEV_RUN_STEPS`.
    Generation runs on global rank zero only (a grid is for eyes, not metrics; the metric callbacks shard
    generation over ranks), one prompt at a time under a progress bar (:mod:`msdm.progress`; off when the Trainer
    has no progress bar). Seeded — prompt ``p`` gets ``seed + p · num_images_per_prompt``, the seed of its first
    image, as the metric callbacks do — so grids of successive epochs are comparable.
    """

    def __init__(self, prompts: list[str] | None = None, num_images_per_prompt: int = 4, every_n_epochs: int = 1,
                 seed: int = 0, num_inference_steps: int | None = None):
        self.prompts = prompts
        self.n = num_images_per_prompt
        self.every = every_n_epochs
        self.seed = seed
        self.steps = num_inference_steps

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not is_generator_module(pl_module):
            return
        if (trainer.current_epoch + 1) % self.every and not trainer.fast_dev_run:
            return
        log_dir = trainer.log_dir or trainer.default_root_dir  # a broadcast under DDP: every rank must ask
        if not trainer.is_global_zero:
            return
        dm = getattr(trainer, "datamodule", None)
        prompts = (self.prompts or list(getattr(pl_module, "sample_prompts", []) or [])
                   or list(getattr(dm, "validation_prompts", []) or []))
        if not prompts:
            return
        steps = self.steps or (FAST_DEV_RUN_STEPS if trainer.fast_dev_run else None)
        kwargs = {"num_inference_steps": steps} if steps else {}
        # chunks of 16 images (image k seeded seed + k, the same images as prompt by prompt): batched sampling is
        # several times faster on a CPU than one prompt at a time (the quickstart's 10-prompt grid took 2.7 s per grid)
        generator = ModuleGenerator(pl_module, **kwargs)
        images = generate_with_progress(trainer, generator, *prompt_major(prompts, self.n, self.seed), chunk=16,
                                        desc=f"sample grid (epoch {trainer.current_epoch})", unit="chunk")
        info = generator.info()
        path = os.path.join(log_dir, "samples", f"epoch={trainer.current_epoch:04d}.png")
        grid = save_grid(images, path, prompts, self.seed, info, epoch=trainer.current_epoch,
                         global_step=trainer.global_step)
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_image"):
            experiment.add_image("samples", grid, trainer.global_step)
            if hasattr(experiment, "add_text"):
                experiment.add_text("samples/prompts", "\n".join(f"{i}. {p}" for i, p in enumerate(prompts)),
                                    trainer.global_step)
