"""Lightning's overhead: one epoch of the tiny MSDM U-Net through ``Trainer`` vs a bare PyTorch loop doing the same
work (same module code for VAE encoding, caption memo, CFG dropout and the diffusion loss; same data loader, AdamW,
per-step reseeding and finite-loss check), one process, one thread.

    python bench/lightning_overhead.py [--images 144] [--batch-size 8] [--repeats 7]

Two ratios, each the median over ``--repeats`` interleaved runs (bare, Trainer, bare, Trainer, ...):
* ``fit()`` of one epoch, Trainer construction and setup included, vs optimizer construction + one bare epoch;
* the steady-state epoch (the second epoch of a two-epoch fit, timed by a callback from epoch start to epoch end)
  vs the second of two bare epochs.
CPU time (``time.process_time``) is the headline because the machine is shared; wall time is printed next to it.
The Trainer runs without logger, checkpointing, progress bar and model summary: what a benchmark or a cluster job
would switch off (each is printed separately with ``--defaults``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

warnings.filterwarnings("ignore")


def build(tmp: Path, images: int, size: int):
    import lightning.pytorch as pl

    from lightning_modules import MSDMUNetModule, MSDMVAEModule
    from msdm.testing import image_text_samples, shared_data_dir, write_tiny_text_encoder

    te = write_tiny_text_encoder(tmp / "te", hidden_size=32)
    tr = pl.Trainer(accelerator="cpu", max_steps=0, logger=False, enable_checkpointing=False)
    tr.strategy.connect(MSDMVAEModule(preset="tiny"))
    tr.save_checkpoint(tmp / "vae.ckpt")
    folder = shared_data_dir() / "kvasir-seg" / "images"
    if folder.exists():
        samples = image_text_samples(folder, n=images, size=size)
    else:  # outside this workplace: synthetic scenes
        from msdm.synthetic import SyntheticGIDataset

        ds = SyntheticGIDataset(images, size, 0, "train")
        samples = [{k: ds[i][k] for k in ("pixel_values", "caption", "id")} for i in range(images)]
    torch.manual_seed(0)
    module = MSDMUNetModule(preset="tiny", vae=str(tmp / "vae.ckpt"), text_encoder=te, max_length=16, lr=1e-4,
                            image_size=size)
    return module, samples


def loader(samples, batch_size):
    from torch.utils.data import DataLoader

    from msdm.data.epoch_sampler import EpochShuffleSampler

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(samples)

        def __getitem__(self, key):
            return samples[key[0]]

    return DataLoader(DS(), batch_size=batch_size, sampler=EpochShuffleSampler(len(samples), seed=0))


def bare_epochs(module, dl, epochs: int) -> list[tuple[float, float]]:
    """The module's training computation in a plain loop; returns (cpu, wall) seconds per epoch."""
    from msdm.data import rng
    from msdm.diffusion import diffusion_loss, drop_captions

    opt = torch.optim.AdamW(module.unet.parameters(), lr=module.hparams.lr, betas=tuple(module.hparams.betas))
    module.train()
    out, step = [], 0
    for epoch in range(epochs):
        dl.sampler.set_epoch(epoch)
        c0, w0 = time.process_time(), time.perf_counter()
        for batch in dl:
            rng.seed_torch(0, "train-step", step, 0, 0)  # reseed_for_step's keys (seed 0, no accumulation, rank 0)
            latents = module.batch_latents(batch, "train")
            captions, _ = drop_captions(list(batch["caption"]), module.hparams.cfg_dropout)
            states, mask = module.encode_prompts(captions)
            loss = diffusion_loss(module.unet, latents, states, mask, module.scheduler, module.hparams.loss_type)
            if not bool(torch.isfinite(loss.detach())):  # ensure_finite's check
                raise FloatingPointError
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        out.append((time.process_time() - c0, time.perf_counter() - w0))
    return out


class EpochTimer:
    def __init__(self):
        import lightning.pytorch as pl

        class CB(pl.Callback):
            def __init__(cb):
                cb.times = []

            def on_train_epoch_start(cb, trainer, module):
                cb.t = (time.process_time(), time.perf_counter())

            def on_train_epoch_end(cb, trainer, module):
                cb.times.append((time.process_time() - cb.t[0], time.perf_counter() - cb.t[1]))

        self.cb = CB()


def trainer_fit(module, dl, epochs: int, defaults: bool = False, root: str = "."):
    import lightning.pytorch as pl

    timer = EpochTimer().cb
    kw = {} if defaults else dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                  enable_model_summary=False)
    c0, w0 = time.process_time(), time.perf_counter()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, num_sanity_val_steps=0,
                         limit_val_batches=0, default_root_dir=root, callbacks=[timer], **kw)
    trainer.fit(module, dl)
    return (time.process_time() - c0, time.perf_counter() - w0), timer.times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=144)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--defaults", action="store_true", help="also time a Trainer with its default logger/checkpoint/bar")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory() as tmp:
        module, samples = build(Path(tmp), args.images, args.size)
        dl = loader(samples, args.batch_size)
        steps = len(dl)
        bare_epochs(module, dl, 1)  # warm-up: allocator, caption memo, first-call costs
        trainer_fit(module, dl, 1, root=tmp)
        fit_ratio, steady_ratio, rows = [], [], []
        for _ in range(args.repeats):
            c0, w0 = time.process_time(), time.perf_counter()
            b1 = bare_epochs(module, dl, 1)
            bare_one = (time.process_time() - c0, time.perf_counter() - w0)
            (fit_one, _) = trainer_fit(module, dl, 1, root=tmp)
            b2 = bare_epochs(module, dl, 2)[1]
            _, t2 = trainer_fit(module, dl, 2, root=tmp)
            fit_ratio.append((fit_one[0] / bare_one[0], fit_one[1] / bare_one[1]))
            steady_ratio.append((t2[1][0] / b2[0], t2[1][1] / b2[1]))
            rows.append((bare_one, fit_one, b2, t2[1], b1))
        med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
        print(f"Lightning overhead: tiny MSDM U-Net ({sum(p.numel() for p in module.unet.parameters()) / 1e3:.0f} k "
              f"params), {args.images} images at {args.size}², batch {args.batch_size} ({steps} steps/epoch), "
              f"1 thread, {args.repeats} interleaved repeats; medians")
        print(f"{'':<38}{'bare loop':>12}{'Trainer':>12}{'ratio':>9}")
        print(f"{'one epoch incl. setup, CPU s':<38}{med([r[0] for r in rows], 0):>12.3f}"
              f"{med([r[1] for r in rows], 0):>12.3f}{med(fit_ratio, 0):>8.3f}×")
        print(f"{'one epoch incl. setup, wall s':<38}{med([r[0] for r in rows], 1):>12.3f}"
              f"{med([r[1] for r in rows], 1):>12.3f}{med(fit_ratio, 1):>8.3f}×")
        print(f"{'steady-state epoch, CPU s':<38}{med([r[2] for r in rows], 0):>12.3f}"
              f"{med([r[3] for r in rows], 0):>12.3f}{med(steady_ratio, 0):>8.3f}×")
        print(f"{'steady-state epoch, wall s':<38}{med([r[2] for r in rows], 1):>12.3f}"
              f"{med([r[3] for r in rows], 1):>12.3f}{med(steady_ratio, 1):>8.3f}×")
        q = lambda xs, i: statistics.quantiles([x[i] for x in xs], n=4)  # noqa: E731
        print(f"ratio quartiles (CPU): one epoch incl. setup {q(fit_ratio, 0)[0]:.3f}–{q(fit_ratio, 0)[2]:.3f}, "
              f"steady state {q(steady_ratio, 0)[0]:.3f}–{q(steady_ratio, 0)[2]:.3f}")
        per_step = (med([r[3] for r in rows], 0) - med([r[2] for r in rows], 0)) / steps * 1e3
        print(f"Lightning per-step overhead (steady state, CPU): {per_step:.2f} ms on a "
              f"{med([r[2] for r in rows], 0) / steps * 1e3:.1f} ms step (goal: ratio ≤ 1.05×)")
        if args.defaults:
            (d, _) = trainer_fit(module, dl, 1, defaults=True, root=tmp)
            print(f"Trainer with default logger/checkpoint/progress bar/summary, one epoch: {d[0]:.3f} CPU s, "
                  f"{d[1]:.3f} wall s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
