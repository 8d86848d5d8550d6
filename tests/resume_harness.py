"""Exact-resume harness shared by tests/test_resume.py, its subprocess child (tests/scripts/resume_child.py) and the
measurement script bench/resume_exactness.py.

Every generator module trains ``TOTAL_STEPS`` optimizer steps on a tiny synthetic DataModule (4 steps per epoch, so
the run ends mid-epoch and every stop below lands mid-epoch) with ``ResumableCheckpoint``; a stopped run is resumed
from its ``last.ckpt`` (or a mid-epoch step checkpoint) and its final weights — every trainable tensor, the EMA and
buffers such as the latent scale — are compared with an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

TOTAL_STEPS = 7  # 4 steps per epoch: ends mid-epoch 1
STEPS_PER_EPOCH = 4
EVERY_N_STEPS = 3  # mid-epoch checkpoints at steps 3 (epoch 0) and 6 (epoch 1)
SIGNAL_AT_STEP = 2  # a signal during step 2 -> `last` at step 3 (mid-epoch 0)
STOP_AT_STEP = 5  # max_steps of the interrupted run (mid-epoch 1)
SEED = 11
KINDS = ("vae", "unet", "unet_cache", "kandinsky", "flux")


def write_assets(root: str | os.PathLike) -> dict:
    """Tiny random components written once: a VAE folder, a text encoder, Kandinsky and FLUX folders."""
    from lightning_modules import MSDMVAEModule
    from msdm.lora.testing import write_tiny_flux, write_tiny_kandinsky_decoder, write_tiny_kandinsky_prior
    from msdm.testing import write_tiny_text_encoder

    root = Path(root)
    torch.manual_seed(0)
    MSDMVAEModule(preset="tiny").export(str(root / "vae"))
    return {
        "vae": str(root / "vae"),
        "text_encoder": write_tiny_text_encoder(root / "text_encoder", hidden_size=32),
        "kandinsky_prior": write_tiny_kandinsky_prior(root / "k_prior"),
        "kandinsky_decoder": write_tiny_kandinsky_decoder(root / "k_decoder"),
        "flux": write_tiny_flux(root / "flux"),
    }


def make_module(kind: str, assets: dict):
    from lightning_modules import FluxLoRAModule, KandinskyLoRAModule, MSDMUNetModule, MSDMVAEModule

    if kind == "vae":
        return MSDMVAEModule(preset="tiny", lr=1e-3, ema_decay=0.9)
    if kind in ("unet", "unet_cache"):
        return MSDMUNetModule(preset="tiny", vae=assets["vae"], text_encoder=assets["text_encoder"], max_length=16,
                              lr=1e-3, lr_warmup_steps=3, ema_decay=0.5, unet_overrides={"dropout": 0.1},
                              num_inference_steps=2, cache_dir="memory" if kind == "unet_cache" else None)
    if kind == "kandinsky":
        return KandinskyLoRAModule(stage="decoder", prior_model=assets["kandinsky_prior"],
                                   decoder_model=assets["kandinsky_decoder"], rank=4, learning_rate=1e-3,
                                   snr_gamma=5.0, height=32, width=32, export_lora=False)
    if kind == "flux":
        return FluxLoRAModule(model=assets["flux"], rank=4, learning_rate=1e-3, frozen_dtype="float32",
                              max_sequence_length=16, text_cache_dir="memory", weighting_scheme="logit_normal",
                              height=32, width=32, export_lora=False)
    raise ValueError(kind)


def make_data():
    from datamodules import SyntheticGIDataModule

    # 8 scenes, batch 2: 4 steps per epoch; captions re-drawn every epoch (keyed on seed, epoch, sample index)
    return SyntheticGIDataModule(num_train=8, num_val=2, resolution=32, batch_size=2, seed=3)


class SignalAt(pl.Callback):
    """Delivers ``sig`` to this process during training step ``step`` (a real signal: the handlers run)."""

    def __init__(self, step: int, sig: int):
        self.step, self.sig = step, sig

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.sig)


class WaitForParent(pl.Callback):
    """Subprocess tests: at training step ``step``, write ``marker`` and wait for the parent's signal (or death)."""

    def __init__(self, step: int, marker: str, timeout: float = 300.0):
        self.step, self.marker, self.timeout = step, marker, timeout

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step != self.step:
            return
        from lightning_modules import ResumableCheckpoint

        ckpt = next(c for c in trainer.callbacks if isinstance(c, ResumableCheckpoint))
        Path(self.marker).write_text(str(os.getpid()))
        deadline = time.monotonic() + self.timeout
        while ckpt.received_signal is None and time.monotonic() < deadline:
            time.sleep(0.05)  # SIGKILL ends the process here; SIGTERM / SIGUSR1 set the flag and training goes on


def fit(kind: str, assets: dict, root: str | os.PathLike, max_steps: int = TOTAL_STEPS, ckpt_path: str | None = None,
        callbacks=(), every_n_train_steps: int | None = EVERY_N_STEPS):
    """One ``Trainer.fit``; returns the module (its weights are the run's final weights)."""
    from lightning_modules import ResumableCheckpoint

    pl.seed_everything(SEED, verbose=False)
    module = make_module(kind, assets)
    ckpt = ResumableCheckpoint(dirpath=str(root), every_n_train_steps=every_n_train_steps, save_top_k=-1)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                         default_root_dir=str(root), callbacks=[ckpt, *callbacks])
    trainer.fit(module, datamodule=make_data(), ckpt_path=ckpt_path)
    return module


def final_weights(module) -> dict[str, torch.Tensor]:
    """Everything a resumed run must reproduce: trainable tensors, EMA shadows, persistent buffers."""
    out = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    out.update({f"buffer:{n}": b.detach().clone() for n, b in module.named_buffers()
                if n == "latent_scale"})
    ema = getattr(module, "ema", None)
    if ema is not None:
        out.update({f"ema:{i}": t.detach().clone() for i, t in enumerate(ema.ema.shadow_params)})
    return out


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    if set(a) != set(b):
        raise AssertionError(f"different tensors: {sorted(set(a) ^ set(b))[:5]}")
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def all_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def checkpoint_step(path: str | os.PathLike) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def resume_and_compare(kind: str, assets: dict, ckpt: str | os.PathLike, root: str | os.PathLike,
                       reference: dict[str, torch.Tensor]) -> tuple[float, bool]:
    resumed = fit(kind, assets, root, ckpt_path=str(ckpt))
    w = final_weights(resumed)
    return max_abs_diff(reference, w), all_equal(reference, w)


SIGNALS = {"sigterm": signal.SIGTERM, "sigusr1": signal.SIGUSR1}


def save_assets(assets: dict, path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(assets))
