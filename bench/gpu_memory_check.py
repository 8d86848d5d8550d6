"""Measured peak GPU memory of one training step of each generator vs ``msdm memory``'s prediction.

    python bench/gpu_memory_check.py             # on a GPU: ~3 min on an H100/H200 (random weights, full depth)
    python bench/gpu_memory_check.py --dry-run   # anywhere: parse the configs and print the plan

For each case the script builds, on the GPU and at the **published depth**, exactly what the prediction counts: the
frozen components that stay on the GPU (random weights in ``frozen_dtype``), the trainable model (LoRA at the
config's rank on the frozen base, or the fp32 MSDM U-Net), AdamW over the trainable parameters; then it runs two
training steps of :func:`msdm.scale.memory.training_forward` (the same input shapes the prediction uses) under real
CUDA autocast when the config trains in mixed precision, and reads ``torch.cuda.max_memory_allocated`` from the
second step (the first allocates the AdamW moments). What differs from the prediction is therefore what the
prediction emulates: the CUDA attention kernels' saved tensors, autocast's casts, and allocator rounding.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# (config, overrides): what a GPU check covers in a few minutes; the batch sizes keep each case well inside 80 GB.
CASES = [
    ("configs/msdm_unet_kvasir.yaml", {"batch_size": 16}),
    ("configs/kandinsky_lora_prior_kvasir.yaml", {"batch_size": 16, "resolution": 512}),
    ("configs/kandinsky_lora_decoder_kvasir.yaml", {"batch_size": 4, "resolution": 512}),
    ("configs/flux_lora_kvasir.yaml", {"batch_size": 1, "resolution": 512}),
]


def measure(setup, checkpointing: bool) -> int:
    """Peak allocated bytes of the second of two training steps of ``setup`` built at full depth on the GPU."""
    from msdm.scale.memory import build_trainable, training_forward

    spec = setup.spec
    dev = "cuda"
    frozen = [spec.build(c, "full", setup.weight_dtype, dev).requires_grad_(False)
              for c in setup.frozen_on_gpu if c != spec.trainable]
    model = build_trainable(setup, "full", dev).train()
    if checkpointing:
        model.enable_gradient_checkpointing()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    run = training_forward(setup, model, dev)
    amp = setup.autocast_dtype
    torch.cuda.synchronize()
    peak = 0
    for step in range(2):
        torch.cuda.reset_peak_memory_stats()
        with torch.autocast("cuda", dtype=amp, enabled=amp is not None):
            loss = run()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step == 1:
            peak = torch.cuda.max_memory_allocated()
    del frozen, model, opt, params, run, loss
    torch.cuda.empty_cache()
    return peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="all", help="all, or a comma list of generators (msdm, kandinsky-prior, "
                                                    "kandinsky-decoder, flux)")
    ap.add_argument("--dry-run", action="store_true", help="parse the configs, print the plan, run nothing")
    args = ap.parse_args(argv)

    from msdm.scale.memory import predict, setup_from_config

    setups = [setup_from_config(ROOT / c, **o) for c, o in CASES]
    if args.cases != "all":
        wanted = set(args.cases.split(","))
        unknown = wanted - {s.generator for s in setups}
        if unknown:
            ap.error(f"unknown cases {sorted(unknown)}")
        setups = [s for s in setups if s.generator in wanted]
    for s in setups:
        print(f"plan: {s.generator} {s.resolution}² batch {s.batch_size} {s.precision} frozen {s.frozen_dtype} "
              f"rank {s.rank} ({Path(s.source).name})")
    if args.dry_run:
        return 0
    if not torch.cuda.is_available():
        print("no CUDA device: nothing measured (use --dry-run to check the plan)")
        return 1
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"{'case':<34}{'ckpt':>5}{'predicted GiB':>15}{'measured GiB':>14}{'measured/pred':>15}{'s':>6}")
    for s in setups:
        pred = predict(s)
        for ck in ((False, True) if s.checkpointing_supported else (False,)):
            t0 = time.perf_counter()
            try:
                got = measure(replace(s), ck)
            except torch.OutOfMemoryError:
                got = None
                torch.cuda.empty_cache()
            want = pred.total(ck)
            name = f"{s.generator} {s.resolution}² b{s.batch_size}"
            meas = "OOM" if got is None else f"{got / 2**30:.2f}"
            ratio = "" if got is None else f"{got / want:.3f}"
            print(f"{name:<34}{'on' if ck else 'off':>5}{want / 2**30:>15.2f}{meas:>14}{ratio:>15}"
                  f"{time.perf_counter() - t0:>6.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
