"""Cost of the EMA update relative to a training step: ``msdm.training.ema.EMA`` (one in-place foreach lerp)
vs diffusers' ``EMAModel.step`` with and without foreach.

    python bench/ema_cost.py [--threads 1] [--repeats 20]

For the ``small`` preset (quickstart, batch 16 at 64²) it times a full training step of the U-Net (forward, backward,
AdamW) and one EMA update; for the ``paper`` preset (326.5 M parameters) the EMA update alone (a paper-preset step on
a CPU takes minutes, so its ratio is for bench/gpu_throughput.py on a GPU). CPU time, medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def timed(fn, repeats):
    fn()
    out = []
    for _ in range(repeats):
        c = time.process_time()
        fn()
        out.append(time.process_time() - c)
    return statistics.median(out)


def measure(preset: str, full_step: bool, repeats: int) -> str:
    from diffusers.training_utils import EMAModel

    from msdm.diffusion import diffusion_loss, training_scheduler
    from msdm.models.presets import build_unet

    sched = training_scheduler()
    torch.manual_seed(0)
    unet = build_unet(preset, 384 if preset == "small" else 768)
    params = list(unet.parameters())
    row = f"{preset:<6} {sum(p.numel() for p in params) / 1e6:7.1f} M params"
    from msdm.training.ema import EMA

    n = max(3, repeats // (10 if preset == "paper" else 1))
    t_ours = timed(EMA(params, decay=0.999).update, n)
    row += f" | msdm EMA (foreach lerp) {t_ours * 1e3:7.1f} ms"
    for foreach in (True, False):
        ema = EMAModel(params, decay=0.999, foreach=foreach)
        t = timed(lambda ema=ema: ema.step(params), n)
        row += f" | diffusers {'foreach' if foreach else 'per-tensor'} {t * 1e3:7.1f} ms"
    if full_step:
        opt = torch.optim.AdamW(params, lr=1e-4)
        x, s, m = torch.randn(16, 4, 16, 16), torch.randn(16, 64, 384), torch.ones(16, 64)

        def step():
            loss = diffusion_loss(unet, x, s, m, sched)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        t_step = timed(step, repeats)
        row += f" | train step (batch 16, 64²) {t_step * 1e3:8.1f} ms → EMA adds {100 * t_ours / t_step:.1f} %"
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)


    print(f"EMA cost, {args.threads} thread(s), CPU time, median of {args.repeats}")
    for preset, full_step in (("small", True), ("paper", False)):
        print(measure(preset, full_step, args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
