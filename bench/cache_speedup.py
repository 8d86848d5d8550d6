"""Training-step time with the latent + text cache vs the VAE and text encoder running on the fly.

    python bench/cache_speedup.py [--steps 30] [--batch-size 16] [--threads 1]

Setting: the ``small`` preset (the CPU quickstart's U-Net and VAE) at 64², the real pretrained all-MiniLM-L6-v2 text
encoder (``builtin:all-MiniLM-L6-v2``, 22.7 M parameters, 64 tokens) and synthetic scenes with their captions. One
training step = latents → CFG dropout → text states → U-Net forward/backward → AdamW, run through the module's own
code (``batch_latents``, ``encode_prompts``, ``diffusion_loss``) in a plain loop, with the batches in memory so
data loading is not measured. Three modes, interleaved step by step:

* ``on the fly``: VAE encode and text encoder every step (``text_cache_size=0``);
* ``caption memo``: VAE every step, text states memoised in RAM per caption (the module's default without a cache);
* ``disk cache``: posteriors and text states read from the on-disk cache (filled once beforehand; the one-off fill
  time is printed), VAE and text encoder not loaded.

CPU time per step (``time.process_time``) is the headline; the machine is shared, wall time is printed too.
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

warnings.filterwarnings("ignore")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="measured steps per mode (after 3 warm-up steps)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--text-encoder", default="builtin:all-MiniLM-L6-v2")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from lightning_modules import MSDMUNetModule, MSDMVAEModule
    from msdm.diffusion import diffusion_loss, drop_captions
    from msdm.synthetic import SyntheticGIDataset

    tmp = Path(tempfile.mkdtemp(prefix="cache_speedup-"))
    pl.seed_everything(0, verbose=False)
    tr = pl.Trainer(accelerator="cpu", max_steps=0, logger=False, enable_checkpointing=False)
    tr.strategy.connect(MSDMVAEModule(preset="small"))
    tr.save_checkpoint(tmp / "vae.ckpt")
    ds = SyntheticGIDataset(args.images, args.resolution, 0, "train")
    samples = [{k: ds[i][k] for k in ("pixel_values", "caption", "id")} for i in range(args.images)]
    batches = list(DataLoader(samples, batch_size=args.batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(0)))
    common = dict(preset="small", vae=str(tmp / "vae.ckpt"), text_encoder=args.text_encoder,
                  image_size=args.resolution)
    modules = {
        "on the fly": MSDMUNetModule(**common, text_cache_size=0),
        "caption memo": MSDMUNetModule(**common),
        "disk cache": MSDMUNetModule(**common, cache_dir=str(tmp / "cache"), cache_on_miss="error"),
    }
    c0, w0 = time.process_time(), time.perf_counter()
    fill = modules["disk cache"].fill_cache({"train": DataLoader(samples, batch_size=64)})
    fill_cpu, fill_wall = time.process_time() - c0, time.perf_counter() - w0
    modules["disk cache"].release_frozen()
    opts = {k: torch.optim.AdamW(m.unet.parameters(), lr=1e-4) for k, m in modules.items()}
    for m in modules.values():
        m.train()
        m.unet.load_state_dict(modules["on the fly"].unet.state_dict())

    def step(name, batch):
        m, opt = modules[name], opts[name]
        latents = m.batch_latents(batch, "train")
        captions, _ = drop_captions(list(batch["caption"]), m.hparams.cfg_dropout)
        states, mask = m.encode_prompts(captions)
        loss = diffusion_loss(m.unet, latents, states, mask, m.scheduler, m.hparams.loss_type)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = {k: [] for k in modules}
    for i in range(args.steps + 3):
        batch = batches[i % len(batches)]
        for name in modules:
            c, w = time.process_time(), time.perf_counter()
            step(name, batch)
            if i >= 3:
                times[name].append((time.process_time() - c, time.perf_counter() - w))
    med = {k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for k, v in times.items()}
    distinct = len({s["caption"] for s in samples})
    print(f"cache speedup: preset small at {args.resolution}², batch {args.batch_size}, {args.text_encoder}, "
          f"{args.images} synthetic images ({distinct} distinct captions), {args.steps} steps per mode, "
          f"{args.threads} thread(s); medians")
    print(f"{'mode':<14}{'CPU ms/step':>12}{'wall ms/step':>14}{'speedup (CPU)':>15}")
    for k in modules:
        print(f"{k:<14}{med[k][0] * 1e3:>12.1f}{med[k][1] * 1e3:>14.1f}{med[k][0] / med['disk cache'][0]:>14.2f}×"
              if k != "disk cache" else f"{k:<14}{med[k][0] * 1e3:>12.1f}{med[k][1] * 1e3:>14.1f}{'1.00×':>15}")
    print(f"cache vs on the fly: {med['on the fly'][0] / med['disk cache'][0]:.2f}× (goal ≥ 2×); vs caption memo: "
          f"{med['caption memo'][0] / med['disk cache'][0]:.2f}×")
    print(f"one-off fill of {args.images} images: {fill_cpu:.1f} CPU s ({fill_wall:.1f} wall s), {fill}")
    print(f"frozen parts in memory while training from the cache: {modules['disk cache'].frozen_loaded()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
