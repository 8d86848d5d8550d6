"""``msdm report RUN_DIRS...``: mean ± std of the metrics over runs/seeds as a Markdown table."""

from __future__ import annotations

NAME = "report"
HELP = ("Mean ± std over runs (seeds) of Fidelity, Agreement, Diversity, FBD, FID, KID, precision/recall, "
        "density/coverage and copy fraction as a Markdown table (a single run: its 95 %% interval where it states one), "
        "with the n real / n generated behind each figure and a warning below the stability rule. A run is a "
        "folder with metrics.json (msdm evaluate), metrics.csv (Lightning CSVLogger) or TensorBoard event files "
        "(the shipped configs' logs), or the file itself; write LABEL=PATH to name a row, otherwise runs are grouped "
        "by their parent folder's name (--group-by run: one row per run, e.g. a LoRA rank sweep).")


def add_arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders or metrics files (LABEL=PATH to label)")
    parser.add_argument("--group-by", choices=["parent", "run", "none"], default="parent",
                        help="rows: parent folder name (default), one row per run, or all runs in one row")
    parser.add_argument("--decimals", type=int, default=2, help="decimals in the table (default 2, as the paper)")
    parser.add_argument("--output", "-o", default=None, help="also write the Markdown table to this file")
    parser.add_argument("--json", default=None, help="also write the aggregated numbers to this JSON file")


def run(args) -> int:
    from msdm.io import write_json, write_text
    from msdm.metrics.report import aggregate, markdown_table

    table = aggregate(args.runs, group_by=args.group_by)
    text = markdown_table(table, decimals=args.decimals)
    print(text)
    if args.output:
        write_text(args.output, text + "\n")
    if args.json:
        write_json(args.json, table)
    return 0
