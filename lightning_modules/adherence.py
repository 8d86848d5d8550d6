"""Prompt-adherence callbacks on the synthetic scenes (:mod:`msdm.metrics.adherence`).

* :class:`AdherenceCallback` (text-to-image modules with ``generate()``, e.g. ``MSDMUNetModule``): at validation
  end, paired mode with a few images and sampling steps; logs ``adherence/gap_<attr>``, ``adherence/pos_<attr>``,
  ``adherence/neg_<attr>`` and ``adherence/mean_gap``.
* :class:`VAECheck` (``MSDMVAEModule``): at validation end, the detectors' verdicts on a fixed set of validation
  renders vs on their reconstructions; logs ``vae_check/<attr>`` (agreement) and, for the yes/no attributes,
  ``vae_check/<attr>_rate_inputs`` / ``vae_check/<attr>_rate_reconstructions``.

DDP: the adherence callback gives each rank a contiguous block of the image indices (seeds ``seed + k``, so the
images do not depend on the number of ranks), sums the detection counts over ranks and logs the identical result
on every rank with ``sync_dist=False``. The VAE check is cheap and runs the same fixed images on every rank.
The detector lives on the callback, never on the module: its weights stay out of checkpoints.
"""

from __future__ import annotations

from contextlib import nullcontext

import lightning.pytorch as pl
import torch

from msdm.metrics.adherence import (
    DEFAULT_PAIRS,
    SceneDetector,
    check_pairs,
    detector_agreement,
    module_generate_fn,
    pair_counts,
    paired_result,
    vae_reconstruct,
)
from msdm.metrics.real_detector import REAL_PAIRS, RealFrameDetector

__all__ = ["AdherenceCallback", "VAECheck"]


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
        detector: weights of the detector (None = the shipped ones).
        kind: ``"scene"`` (synthetic scenes: :class:`~msdm.metrics.scene_detector.SceneDetector`, default pairs
            :data:`~msdm.metrics.adherence.DEFAULT_PAIRS`) or ``"real"`` (real frames:
            :class:`~msdm.metrics.real_detector.RealFrameDetector`, default pairs
            :data:`~msdm.metrics.real_detector.REAL_PAIRS`: box, text, polyp size, count and location).
    """

    def __init__(self, pairs: dict[str, list[str]] | None = None, num_images: int = 8, seed: int = 0,
                 num_inference_steps: int = 10, guidance_scale: float | None = None, sampler: str | None = None,
                 every_n_epochs: int = 1, detector: str | None = None, kind: str = "scene"):
        super().__init__()
        if kind not in ("scene", "real"):
            raise ValueError(f"kind must be 'scene' (synthetic scenes) or 'real' (real frames), got {kind!r}")
        self.kind = kind
        self.pairs = {k: tuple(v) for k, v in (pairs or (DEFAULT_PAIRS if kind == "scene" else REAL_PAIRS)).items()}
        check_pairs(self.pairs, RealFrameDetector if kind == "real" else None)
        self.num_images, self.seed = int(num_images), int(seed)
        self.num_inference_steps, self.guidance_scale, self.sampler = num_inference_steps, guidance_scale, sampler
        self.every_n_epochs = int(every_n_epochs)
        self.detector_source = detector
        self._detector: SceneDetector | None = None
        self.last_result: dict | None = None

    def state_dict(self) -> dict:
        return {}  # nothing to resume, no detector weights

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not _due(trainer, self.every_n_epochs):
            return
        if not hasattr(pl_module, "generate"):
            raise TypeError(f"AdherenceCallback needs a module with generate(); {type(pl_module).__name__} has none")
        if self._detector is None:
            make = RealFrameDetector if self.kind == "real" else SceneDetector
            self._detector = make(self.detector_source or "default")
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
            images = module_generate_fn(pl_module, **kwargs)(prompts, seeds)
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
        detector: weights of the polyp detector (None = the shipped ones).
    """

    def __init__(self, num_images: int = 64, every_n_epochs: int = 1, detector: str | None = None):
        super().__init__()
        self.num_images, self.every_n_epochs = int(num_images), int(every_n_epochs)
        self.detector_source = detector
        self._detector: SceneDetector | None = None
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
            self._detector = SceneDetector(self.detector_source or "default")
        n = min(self.num_images, 4) if trainer.fast_dev_run else self.num_images
        images = self._fixed_images(trainer, n)
        ema = getattr(pl_module, "ema", None)
        with ema.swapped_in() if ema is not None else nullcontext():
            recon = vae_reconstruct(pl_module.vae, images.to(pl_module.device))
        result = detector_agreement(images, recon.cpu(), self._detector)
        for attr, r in result.items():
            pl_module.log(f"vae_check/{attr}", r["agreement"], sync_dist=False, rank_zero_only=False)
            for key in ("rate_inputs", "rate_reconstructions"):
                if key in r:
                    pl_module.log(f"vae_check/{attr}_{key}", r[key], sync_dist=False, rank_zero_only=False)
        self.last_result = result
