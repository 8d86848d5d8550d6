"""``msdm memory CONFIG``: predicted peak GPU memory of a training config at full depth (docs/scaling.md).

Weights by dtype, LoRA / trainable parameters with their gradients and AdamW moments, and the activations the
training forward keeps for backward — measured on the meta device at reduced depth (CUDA's flash attention and
autocast emulated) and scaled per block to the published depth — with and without gradient checkpointing. Nothing
is downloaded and no weights are read: the architectures are the published configs in :mod:`msdm.lora.published`.
"""

from __future__ import annotations

NAME = "memory"
HELP = "predict the peak GPU memory of a training config (msdm fit YAML) at full depth, with and without checkpointing"


def add_arguments(parser) -> None:
    parser.add_argument("config", help="a msdm fit config (configs/*.yaml) of MSDMUNetModule, KandinskyLoRAModule or "
                                       "FluxLoRAModule")
    parser.add_argument("--resolution", type=int, default=None, help="training image side (default: the config's data)")
    parser.add_argument("--batch-size", type=int, default=None, help="per-GPU batch (default: the config's data)")
    parser.add_argument("--rank", type=int, nargs="+", default=None,
                        help="LoRA rank(s) (default: the config's); several print one row per rank")
    parser.add_argument("--text-tokens", type=int, default=None,
                        help="MSDM max_length / FLUX max_sequence_length (default: the config's)")
    parser.add_argument("--precision", default=None, help="Lightning precision, e.g. bf16-mixed (default: the config's)")
    parser.add_argument("--frozen-dtype", default=None, help="dtype of the frozen weights (default: the config's)")
    parser.add_argument("--verify", action="store_true",
                        help="also run the full-depth forward on the meta device and print its activations next to "
                             "the scaled ones")
    parser.add_argument("--json", action="store_true", help="print every part in bytes as JSON")


def run(args) -> int:
    import json
    import time

    from msdm.scale.memory import (
        format_prediction,
        format_rank_table,
        measure_activations,
        predict,
        setup_from_config,
    )

    overrides = {"resolution": args.resolution, "batch_size": args.batch_size, "text_tokens": args.text_tokens,
                 "precision": args.precision, "frozen_dtype": args.frozen_dtype}
    try:
        base = setup_from_config(args.config, **overrides)
    except (ValueError, FileNotFoundError) as e:
        print(f"msdm memory: {e}")
        return 2
    ranks = args.rank or [base.rank]
    if base.rank is None and args.rank:
        print("msdm memory: --rank applies to the LoRA configs; the MSDM U-Net trains all its weights")
        return 2
    t0 = time.perf_counter()
    from dataclasses import replace

    preds = [predict(replace(base, rank=r)) for r in ranks]
    if args.json:
        print(json.dumps([p.as_dict() for p in preds] if len(preds) > 1 else preds[0].as_dict(), indent=2))
        return 0
    # the full table for the config's own rank when it is among those asked for
    main = next((p for p in preds if p.setup.rank == base.rank), preds[0])
    print(format_prediction(main))
    if len(preds) > 1:
        print()
        print(format_rank_table(preds))
    if args.verify:
        p = main
        for ck in (False, True):
            scaled = p.activations(ck)
            if scaled is None:
                continue
            direct = measure_activations(p.setup, "full", checkpointing=ck)
            print(f"verify ckpt {'on ' if ck else 'off'}: scaled {scaled.peak / 2**30:.3f} GiB, full-depth meta "
                  f"forward {direct.peak / 2**30:.3f} GiB ({100 * (scaled.peak / direct.peak - 1):+.2f} %)")
    print(f"({time.perf_counter() - t0:.0f} s on the CPU; not included: CUDA context ~0.5 GB, allocator reserve, "
          "cuBLAS/cuDNN workspaces)")
    return 0
