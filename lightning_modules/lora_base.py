"""What the LoRA LightningModules share: the arguments of generation and export, LoRA-only checkpoints, the
optimizer, per-step noise seeds, generation through the generator contract, LoRA export.

Checkpoint policy (docs/CONVENTIONS.md): a checkpoint holds what trains — the LoRA weights — plus the optimizer
state, never the frozen base (2 B parameters for Kandinsky, 12 B for FLUX). ``state_dict`` keeps only ``lora_``
entries; ``strict_loading = False`` lets Lightning load that partial dict, and :meth:`load_state_dict` still
refuses a checkpoint that lacks any LoRA weight this module has (a silently half-restored adapter would be worse
than an error).

Exact resume: every training step draws its noise and timesteps from a generator seeded by
``(noise_seed, global step, micro-batch, rank)`` (:func:`lightning_modules.guards.step_keys`), and the global RNGs are
reseeded from the same keys for anything else, so a run resumed from any checkpoint — mid-epoch included, with the
resumable training loader of the DataModules — draws what the uninterrupted run drew.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from pathlib import Path

import lightning as L
import torch

from lightning_modules.guards import ensure_finite, register_gloo_teardown, reseed_for_step, step_keys
from lightning_modules.prediction import predict_step
from lightning_modules.weights_info import remember_checkpoint
from msdm.data import rng
from msdm.generators import StockPipelineGenerator, prompt_major
from msdm.generators.base import sampling_mode


def _is_lora_key(name: str) -> bool:
    return "lora_" in name


class LoRAModuleBase(L.LightningModule):
    """Base of :class:`~lightning_modules.kandinsky_lora.KandinskyLoRAModule` and
    :class:`~lightning_modules.flux_lora.FluxLoRAModule`. Subclasses pass their other arguments' ``**kwargs`` here,
    set ``self.lora_model`` (the model carrying the adapter), list their frozen helper modules in
    :meth:`frozen_modules`, and implement :meth:`loss`, :meth:`save_lora`, :meth:`sampling_defaults`,
    :meth:`build_generator` and ``generation_info``.

    Args:
        height, width: size of generated images.
        sample_prompts: prompts the ``SampleGrid`` callback renders at validation end.
        noise_seed: seed of the per-step noise (exact resume) and of ``generate()`` when none is given;
            ``None`` = the run's ``seed_everything`` value (``PL_GLOBAL_SEED``), else 0. (Not ``seed``: that
            name belongs to the DataModules, and Lightning refuses differing hparams of the same name.)
        lora_output_dir / export_lora: where ``on_train_end`` saves the LoRA (default ``<log_dir>/lora``).
        local_files_only: ``None`` = offline for folders and when ``HF_HUB_OFFLINE`` is set.
    """

    # Lightning loads the LoRA-only state dict without complaining about the (absent) frozen base.
    strict_loading = False

    def __init__(self, height: int = 256, width: int = 256, sample_prompts: list[str] | None = None,
                 noise_seed: int | None = None, lora_output_dir: str | None = None, export_lora: bool = True,
                 local_files_only: bool | None = None):
        super().__init__()
        self.save_hyperparameters()  # the subclass's arguments too (Lightning collects the __init__ chain)
        # Prompts of the SampleGrid callback (lightning_modules.callbacks.images) and other per-epoch image checks.
        self.sample_prompts = list(sample_prompts or [])
        self._gen: dict = {}  # components needed only by generation, loaded lazily, not registered (not moved/saved)

    # ------------------------------------------------------------------ subclass API
    def frozen_modules(self) -> list[torch.nn.Module]:
        """Frozen helper modules (encoders, VAE) that must stay in eval mode while training."""
        return []

    def loss(self, batch: dict, generator: torch.Generator | None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def save_lora(self, directory: str) -> Path:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ what trains
    def lora_parameters(self) -> list[torch.nn.Parameter]:
        return [p for n, p in self.named_parameters() if _is_lora_key(n)]

    def train(self, mode: bool = True):
        super().train(mode)
        # Frozen encoders stay in eval mode (T5 and CLIP have dropout) whatever Lightning asks of the module.
        for m in self.frozen_modules():
            m.eval()
        return self

    # ------------------------------------------------------------------ checkpoints hold only LoRA weights
    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        full = super().state_dict(*args, prefix=prefix, keep_vars=keep_vars)
        out = OrderedDict((k, v) for k, v in full.items() if _is_lora_key(k))
        if destination is not None:
            destination.update(out)
            return destination
        return out

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        expected = {k for k in super().state_dict() if _is_lora_key(k)}
        missing = sorted(expected - set(state_dict))
        if missing:
            raise RuntimeError(
                f"checkpoint lacks {len(missing)} of the {len(expected)} LoRA weights of this module (first: "
                f"{missing[0]}); was it trained with other targets or rank? (hparams: rank, target_modules)"
            )
        unexpected = sorted(k for k in state_dict if k not in expected)
        if unexpected and strict and self.strict_loading:
            raise RuntimeError(f"unexpected keys in LoRA checkpoint: {unexpected[:5]}")
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        # The frozen base is absent from LoRA-only checkpoints by design (it reloads from its source): not "missing".
        # Reporting it made Lightning's load_from_checkpoint warn with every base weight name (thousands for FLUX).
        result.missing_keys[:] = [k for k in result.missing_keys if _is_lora_key(k)]
        return result

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        remember_checkpoint(self, checkpoint)  # generation_info() names the checkpoint's step without a Trainer

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(
            self.lora_parameters(), lr=hp.learning_rate, betas=(hp.adam_beta1, hp.adam_beta2),
            weight_decay=hp.adam_weight_decay, eps=hp.adam_epsilon,
        )
        if not hp.lr_warmup_steps:
            return opt
        warm = int(hp.lr_warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def base_seed(self) -> int:
        """``hparams.noise_seed``, else the run's ``seed_everything`` value, else 0."""
        seed = self.hparams.get("noise_seed")
        return int(seed if seed is not None else os.environ.get("PL_GLOBAL_SEED", 0))

    def step_generator(self, purpose: str, *parts: int) -> torch.Generator:
        """A generator on this module's device seeded by ``(base_seed, purpose, *parts)`` — never by global RNG state."""
        return rng.generator(self.base_seed(), purpose, *parts, device=self.device)

    def setup(self, stage: str) -> None:
        register_gloo_teardown()

    def on_train_batch_start(self, batch, batch_idx):
        reseed_for_step(self, batch_idx, seed=self.base_seed())  # draws without a generator (e.g. LoRA dropout)

    def training_step(self, batch, batch_idx):
        gen = self.step_generator("lora-train", *step_keys(self, batch_idx))
        loss = self.loss(batch, gen)
        ensure_finite(self, loss)  # a NaN/inf loss stops the run before the optimizer step, naming the step
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["caption"]))
        return loss

    def validation_step(self, batch, batch_idx):
        # The same noise at every validation: the curve then moves only because the weights do.
        gen = self.step_generator("lora-val", batch_idx, self.global_rank)
        loss = self.loss(batch, gen)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=len(batch["caption"]))
        return loss

    # ------------------------------------------------------------------ generation as users will see it
    @contextlib.contextmanager
    def lora_as_loaded(self):
        """Hold the LoRA weights in the dtype a stock diffusers pipeline gives them when it loads the saved file.

        The LoRA trains in fp32 next to a bf16 (or fp16) frozen base, and the file is written in fp32; but
        ``load_lora_weights`` / ``load_lora_adapter`` into a bf16 pipeline cast the adapter to the base's dtype.
        Sampling with the fp32 master weights therefore made validation images that differ from what users get
        (max |Δ| 0.016 on a tiny bf16 FLUX). Inside this block the adapter is rounded like the loaded file is; the
        fp32 weights (and the optimizer's references to them) come back unchanged afterwards. A no-op for an fp32
        base.
        """
        base = next((p for n, p in self.lora_model.named_parameters() if not _is_lora_key(n)), None)
        dtype = base.dtype if base is not None else torch.float32
        saved = []
        if dtype != torch.float32 and dtype.is_floating_point:
            for p in self.lora_parameters():
                if type(p.data) is torch.Tensor and p.dtype != dtype:  # plain tensors only (not FSDP/DTensor shards)
                    saved.append((p, p.data))
                    p.data = p.data.to(dtype)
        try:
            yield
        finally:
            for p, data in saved:
                p.data = data
    # ------------------------------------------------------------------ generation: the generator contract
    def sampling_defaults(self) -> dict:  # pragma: no cover - abstract
        """The pipeline arguments of ``generate`` from the hparams (steps, guidance, size, ...)."""
        raise NotImplementedError

    def build_generator(self, call_kwargs: dict, batch_size: int) -> StockPipelineGenerator:  # pragma: no cover
        """The stock pipeline around the live weights as a generator (``weights=self.sampling_weights``)."""
        raise NotImplementedError

    def sampling_weights(self):
        """Eval mode and the adapter as the saved file loads into a stock pipeline of this dtype
        (:meth:`lora_as_loaded`) while sampling."""
        return sampling_mode(self.lora_model, self.lora_as_loaded())

    def generator(self, batch_size: int = 16, **sampling) -> StockPipelineGenerator:
        """This module as a :class:`~msdm.generators.StockPipelineGenerator`; ``sampling`` overrides the defaults."""
        return self.build_generator({**self.sampling_defaults(), **sampling}, batch_size)

    @torch.no_grad()
    def generate(self, prompts: list[str], num_images_per_prompt: int = 1, seed: int | None = None,
                 **sampling) -> torch.Tensor:
        """Images ``[len(prompts) * n, 3, H, W]`` in [0, 1] on CPU, prompt-major; image ``k`` from its own generator
        seeded ``seed + k`` (``noise_seed`` when None), so it does not depend on the batch or the rank."""
        seed = self.base_seed() if seed is None else seed
        return self.generator(**sampling).generate(*prompt_major(prompts, num_images_per_prompt, seed))

    @torch.no_grad()
    def generate_with_seeds(self, prompts: list[str], seeds: list[int], **sampling) -> torch.Tensor:
        """Image ``i`` for ``prompts[i]`` with seed ``seeds[i]`` (``msdm predict``, the callbacks)."""
        return self.generator(**sampling).generate(list(prompts), [int(s) for s in seeds])

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return predict_step(self, batch)  # PromptDataModule batches -> images (lightning_modules/prediction.py)

    # ------------------------------------------------------------------ LoRA export at the end of fit
    def lora_export_dir(self) -> Path | None:
        """Where :meth:`on_train_end` writes the LoRA folder: ``hparams.lora_output_dir`` or ``<log_dir>/lora``."""
        hp = self.hparams
        if hp.get("lora_output_dir"):
            return Path(hp.lora_output_dir)
        if self._trainer is None:
            return None
        root = self.trainer.log_dir or self.trainer.default_root_dir
        return Path(root) / "lora"

    def on_train_end(self):
        if not self.hparams.get("export_lora", True):
            return
        out = self.lora_export_dir()
        if out is not None and self.trainer.is_global_zero:
            self.save_lora(str(out))


@contextlib.contextmanager
def visiting(modules: list[torch.nn.Module], device: torch.device, stay: bool = False):
    """Move ``modules`` to ``device`` for the block, then back to where they were (unless ``stay``).

    Frozen encoders that are needed only on cache misses live on the CPU and visit the GPU only then.
    """
    homes = []
    for m in modules:
        p = next(m.parameters(), None)
        homes.append(p.device if p is not None else torch.device("cpu"))
        m.to(device)
    try:
        yield
    finally:
        if not stay:
            for m, home in zip(modules, homes):
                m.to(home)
