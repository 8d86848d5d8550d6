"""Prompt-adherence callbacks (:mod:`msdm.metrics.adherence`).

* :class:`AdherenceCallback` (text-to-image modules with ``generate()``, e.g. ``MSDMUNetModule``): at validation
  end, paired mode with a few images and sampling steps; logs ``adherence/gap_<attr>``, ``adherence/pos_<attr>``,
  ``adherence/neg_<attr>`` and ``adherence/mean_gap``.
* :class:`VAECheck` (``MSDMVAEModule``): at validation end, the detectors' verdicts on a fixed set of validation
  renders vs on their reconstructions; logs ``vae_check/<attr>`` (agreement) and, for the yes/no attributes,
  ``vae_check/<attr>_rate_inputs`` / ``vae_check/<attr>_rate_reconstructions``.
* :class:`ConditioningDiagnostic` (``MSDMUNetModule``): how much the prompt moves the U-Net's prediction while
  training (``cond/*``, :mod:`msdm.metrics.adherence.conditioning`).

Generation goes through the generator contract (:class:`msdm.generators.ModuleGenerator`: image ``k`` from seed
``seed + k``); the detector is the synthetic scenes' ``SceneDetector`` unless another detector object (or polyp
detector weights) is given (:mod:`msdm.metrics.adherence.detector`).

DDP: the adherence callback gives each rank a contiguous block of the image indices (seeds ``seed + k``, so the
images do not depend on the number of ranks), sums the detection counts over ranks and logs the identical result
on every rank with ``sync_dist=False``. The VAE check is cheap and runs the same fixed images on every rank.
The detector lives on the callback, never on the module: its weights stay out of checkpoints.
"""

from __future__ import annotations

from contextlib import nullcontext

import lightning.pytorch as pl
import torch

from msdm.generators import ModuleGenerator
from msdm.generators.module import is_generator_module
from msdm.metrics.adherence import DEFAULT_PAIRS, check_pairs, detector_agreement, pair_counts, paired_result
from msdm.metrics.adherence.conditioning import DEFAULT_TIMESTEPS, prompt_sensitivity
from msdm.models.vae import reconstruct_images

__all__ = ["AdherenceCallback", "ConditioningDiagnostic", "VAECheck"]


def _detector(source):
    """A detector object as it is, else the synthetic scenes' SceneDetector (with polyp detector weights ``source``)."""
    if source is not None and hasattr(source, "detect"):
        return source
    from msdm.synthetic.scene_detector import SceneDetector

    return SceneDetector(source or "default")


def _due(trainer: pl.Trainer, every_n_epochs: int) -> bool:
    if trainer.sanity_checking:
        return False
    return bool(trainer.fast_dev_run) or (trainer.current_epoch + 1) % every_n_epochs == 0


class AdherenceCallback(pl.Callback):
    """Paired prompt adherence of a text-to-image module at validation end (see the module docstring).

    Args:
        pairs: ``{attr: (prompt, negation)}`` for yes/no attributes (default :data:`~msdm.metrics.adherence.
            DEFAULT_PAIRS`: box, text, instrument, polyp).
        num_images: images per prompt, over all ranks (under ``fast_dev_run``: at most 2).
        seed: image ``k`` of every prompt uses ``seed + k`` (the same seeds for a prompt and its negation).
        num_inference_steps: sampling steps (default 10; under ``fast_dev_run`` 2); ``guidance_scale``,
            ``sampler``: ``generate()`` overrides (None = the module's).
        every_n_epochs: run every n validation epochs (always under ``fast_dev_run``).
        detector: a detector object (:mod:`msdm.metrics.adherence.detector`), or weights of the synthetic scenes'
            polyp detector (None = the shipped ones).
    """

    def __init__(self, pairs: dict[str, list[str]] | None = None, num_images: int = 8, seed: int = 0,
                 num_inference_steps: int = 10, guidance_scale: float | None = None, sampler: str | None = None,
                 every_n_epochs: int = 1, detector=None):
        super().__init__()
        self.pairs = {k: tuple(v) for k, v in (pairs or DEFAULT_PAIRS).items()}
        check_pairs(self.pairs)
        self.num_images, self.seed = int(num_images), int(seed)
        self.num_inference_steps, self.guidance_scale, self.sampler = num_inference_steps, guidance_scale, sampler
        self.every_n_epochs = int(every_n_epochs)
        self.detector_source = detector
        self._detector = None
        self.last_result: dict | None = None

    def state_dict(self) -> dict:
        return {}  # nothing to resume, no detector weights

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not _due(trainer, self.every_n_epochs):
            return
        if not is_generator_module(pl_module):
            raise TypeError(f"AdherenceCallback needs a module with generate(); {type(pl_module).__name__} has none")
        if self._detector is None:
            self._detector = _detector(self.detector_source)
        fast = bool(trainer.fast_dev_run)
        n = min(self.num_images, 2) if fast else self.num_images
        steps = 2 if fast else self.num_inference_steps
        world, rank = trainer.world_size, trainer.global_rank
        share = list(range(rank * n // world, (rank + 1) * n // world))  # contiguous: one generate() per prompt
        kwargs = {"num_inference_steps": steps}
        if self.guidance_scale is not None:
            kwargs["guidance_scale"] = self.guidance_scale
        if self.sampler is not None:
            kwargs["sampler"] = self.sampler
        prompts, seeds = [], []
        for pos, neg in self.pairs.values():
            for p in (pos, neg):
                prompts += [p] * len(share)
                seeds += [self.seed + k for k in share]
        detected = []
        if prompts:
            images = ModuleGenerator(pl_module, **kwargs).generate(prompts, seeds)
            detected = self._detector.detect(images)
        local = pair_counts(detected, self.pairs, len(share))
        counts = torch.tensor([local[a] for a in self.pairs], dtype=torch.float64, device=pl_module.device)
        counts = trainer.strategy.reduce(counts, reduce_op="sum")  # every rank: the counts over all images
        result = paired_result({a: tuple(counts[i].tolist()) for i, a in enumerate(self.pairs)}, n)
        for attr in self.pairs:
            for key in ("gap", "pos", "neg"):
                pl_module.log(f"adherence/{key}_{attr}", result[attr][key], sync_dist=False, rank_zero_only=False)
        pl_module.log("adherence/mean_gap", result["mean_gap"], sync_dist=False, rank_zero_only=False)
        self.last_result = result


class VAECheck(pl.Callback):
    """Do the attribute detectors fire on reconstructions as on inputs? (see the module docstring)

    Args:
        num_images: the first ``num_images`` validation images (fixed across epochs; under ``fast_dev_run`` at
            most 4).
        every_n_epochs: run every n validation epochs (always under ``fast_dev_run``).
        detector: a detector object, or weights of the synthetic scenes' polyp detector (None = the shipped ones).
    """

    def __init__(self, num_images: int = 64, every_n_epochs: int = 1, detector=None):
        super().__init__()
        self.num_images, self.every_n_epochs = int(num_images), int(every_n_epochs)
        self.detector_source = detector
        self._detector = None
        self._images: torch.Tensor | None = None
        self.last_result: dict | None = None

    def state_dict(self) -> dict:
        return {}

    def _fixed_images(self, trainer: pl.Trainer, n: int) -> torch.Tensor:
        if self._images is None or len(self._images) < n:
            dm = getattr(trainer, "datamodule", None)
            if dm is not None and hasattr(dm, "val_dataloader"):
                loader = dm.val_dataloader()  # the DataModule's own, unsharded loader: the same images on every rank
            else:
                loaders = trainer.val_dataloaders
                loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
            parts, seen = [], 0
            for batch in loader:
                x = batch["pixel_values"][: n - seen]
                parts.append(((x.float() + 1) / 2).clamp(0, 1).cpu())  # the batch convention: [-1, 1]
                seen += len(x)
                if seen >= n:
                    break
            if not parts:
                raise ValueError("VAECheck: the validation loader yielded no images")
            self._images = torch.cat(parts)
        return self._images[:n]

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not _due(trainer, self.every_n_epochs):
            return
        if self._detector is None:
            self._detector = _detector(self.detector_source)
        n = min(self.num_images, 4) if trainer.fast_dev_run else self.num_images
        images = self._fixed_images(trainer, n)
        ema = getattr(pl_module, "ema", None)
        with ema.swapped_in() if ema is not None else nullcontext():
            recon = reconstruct_images(pl_module.vae, images.to(pl_module.device))
        result = detector_agreement(images, recon.cpu(), self._detector)
        for attr, r in result.items():
            pl_module.log(f"vae_check/{attr}", r["agreement"], sync_dist=False, rank_zero_only=False)
            for key in ("rate_inputs", "rate_reconstructions"):
                if key in r:
                    pl_module.log(f"vae_check/{attr}_{key}", r[key], sync_dist=False, rank_zero_only=False)
        self.last_result = result


class ConditioningDiagnostic(pl.Callback):
    """Every ``every_n_steps`` training steps (and at validation end), log ``cond/vs_uncond`` and
    ``cond/between_prompts`` (relative L2 differences of ε-predictions; per timestep as ``cond/vs_uncond@t``).

    The latents are the posterior means of the first ``num_latents`` images of the first training batch seen, kept
    for the whole run together with a fixed noise draw, so the curve compares like with like. The EMA weights are
    measured when the module keeps them (they are what samples). Prompts default to the module's ``sample_prompts``,
    then the DataModule's ``validation_prompts``; at least two are needed.
    """

    def __init__(self, prompts: list[str] | None = None, every_n_steps: int | None = 200, on_validation: bool = True,
                 timesteps: tuple[int, ...] = DEFAULT_TIMESTEPS, num_latents: int = 8, seed: int = 0):
        self.prompts = list(prompts) if prompts else None
        self.every = every_n_steps
        self.on_validation = on_validation
        self.timesteps = tuple(int(t) for t in timesteps)
        self.num_latents = num_latents
        self.seed = seed
        self._latents: torch.Tensor | None = None
        self.last: dict[str, float] = {}  # the latest values (for notebooks and tests)

    def _prompts(self, trainer, pl_module) -> list[str]:
        dm = getattr(trainer, "datamodule", None)
        return (self.prompts or list(getattr(pl_module, "sample_prompts", []) or [])
                or list(getattr(dm, "validation_prompts", []) or []))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._latents is None and "pixel_values" in batch:
            n = self.num_latents
            head = {k: v[:n] if isinstance(v, (torch.Tensor, list, tuple)) else v for k, v in batch.items()}
            self._latents = pl_module.batch_latents(head, "train", sample=False).detach().clone()
        if self.every and trainer.global_step % self.every == 0:
            self._measure(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.on_validation and not trainer.sanity_checking:
            self._measure(trainer, pl_module)

    @torch.no_grad()
    def _measure(self, trainer, pl_module) -> None:
        prompts = self._prompts(trainer, pl_module)
        if self._latents is None or len(prompts) < 2:
            return
        unet = pl_module.unet
        was_training = unet.training
        unet.eval()  # no dropout: the measure must not be noisy
        ema = getattr(pl_module, "ema", None)
        try:
            with ema.swapped_in() if ema is not None else nullcontext():
                values = prompt_sensitivity(unet, self._latents.to(pl_module.device), pl_module.encode_prompts,
                                            prompts, pl_module.scheduler, self.timesteps, self.seed)
        finally:
            unet.train(was_training)
        self.last = values
        # Straight to the loggers (rank zero; they are rank_zero_only): allowed from any hook, no cross-rank sync
        # needed for a diagnostic, and logged at the optimizer step it describes.
        for logger in trainer.loggers:
            logger.log_metrics({f"cond/{k}": v for k, v in values.items()}, step=trainer.global_step)
