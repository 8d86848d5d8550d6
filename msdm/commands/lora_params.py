"""``msdm lora-params``: the trainable LoRA parameters of Kandinsky 2.2 and FLUX.1-dev per rank (Table 4 check).

Counts come from the published architectures built on the meta device (no weights, no network) with the exact
targets the LoRA modules train; see :mod:`msdm.lora.param_count`.
"""

from __future__ import annotations

NAME = "lora-params"
HELP = "print the trainable LoRA parameters of Kandinsky 2.2 and FLUX.1-dev for ranks 4..256 (Prompt to Polyp Table 4)"


def add_arguments(parser) -> None:
    parser.add_argument("--ranks", type=int, nargs="+", default=None, help="ranks to list (default: 4 8 16 32 64 128 256)")
    parser.add_argument("--decoder-added-kv", action="store_true",
                        help="also count the Kandinsky decoder's add_k_proj/add_v_proj targets (not in the paper)")
    parser.add_argument("--json", action="store_true", help="print JSON rows (exact counts) instead of the table")


def run(args) -> int:
    import json

    from msdm.lora.adapters import PAPER_RANKS
    from msdm.lora.param_count import format_table4, table4

    rows = table4(args.ranks or PAPER_RANKS, decoder_added_kv=args.decoder_added_kv)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("Trainable LoRA parameters (alpha = rank), published architectures built on the meta device")
    print("Kandinsky targets: to_q, to_k, to_v, to_out.0" + (" + add_k_proj, add_v_proj (decoder)"
                                                             if args.decoder_added_kv else "") +
          "; FLUX.1-dev targets: diffusers' default list (12 module names)")
    print(format_table4(rows))
    print("Paper (Prompt to Polyp, Table 4) at rank 4: Kandinsky 2.2 2.1 M, FLUX.1-dev 11.2 M.")
    return 0
