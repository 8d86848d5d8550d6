"""``msdm presets``: parameter count per MSDM preset and component."""

NAME = "presets"
HELP = "print each MSDM preset's parameter count per component (VAE, U-Net)"


def add_arguments(parser):
    parser.add_argument("--text-embed-dim", type=int, default=None,
                        help="text encoder hidden size for the U-Net's text projection (default: 768 for paper, 384 otherwise)")


def run(args) -> int:
    from msdm.models.presets import preset_parameter_table

    dims = None
    if args.text_embed_dim:
        from msdm.models.presets import PRESETS

        dims = {name: args.text_embed_dim for name in PRESETS}
    rows = preset_parameter_table(dims)
    print(f"{'preset':<8} {'res':>5} {'text dim':>8} {'VAE':>12} {'U-Net':>14} {'total':>14}  note")
    for r in rows:
        tot = r["vae"] + r["unet"]
        print(f"{r['preset']:<8} {r['resolution']:>5} {r['text_embed_dim']:>8} {r['vae'] / 1e6:>10.2f} M "
              f"{r['unet'] / 1e6:>12.2f} M {tot / 1e6:>12.2f} M  {r['note']}")
    print("(text encoder not counted: it is frozen and chosen separately)")
    return 0
