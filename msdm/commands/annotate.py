"""``msdm annotate build | serve | report``: the blinded expert study of Prompt to Polyp §5.1 (docs/expert-evaluation.md)."""

NAME = "annotate"
HELP = "expert evaluation: build a blinded rating study, serve the rating page, report (unblinded) results"


def add_arguments(parser):
    sub = parser.add_subparsers(dest="annotate_command", metavar="{build,raters,serve,report}")

    b = sub.add_parser("build", help="generated folders + real images + prompts -> a blinded study folder",
                       description="Build a study folder: prompt list, image sets under per-prompt random letters, "
                                   "and a sealed key file that the rating page never serves.")
    b.add_argument("--out", required=True, help="study folder to create")
    b.add_argument("--model", action="append", required=True, metavar="NAME=FOLDER",
                   help="a generated folder in the challenge layout (prompt0001_img0001.png); repeat per model")
    b.add_argument("--real", required=True, help="folder of real images (the test set)")
    b.add_argument("--prompts", default=None,
                   help="prompt file the images were generated from (default: the first model folder's prompts.json)")
    b.add_argument("--real-mapping", default=None,
                   help='JSON {"prompt id": [real image ids]} (the challenge\'s); without it each prompt gets '
                        "--num-real random real images")
    b.add_argument("--num-prompts", type=int, default=40, help="prompts in the study (40 in the paper)")
    b.add_argument("--num-images", type=int, default=10, help="images per model and prompt (10 in the paper)")
    b.add_argument("--num-real", type=int, default=10, help="real reference images per prompt (at most)")
    pairing = b.add_mutually_exclusive_group()
    pairing.add_argument("--paired", dest="paired", action="store_true", default=None,
                         help="prompts (1,2), (3,4), ... are (original, rephrased) pairs: kept adjacent, originals at "
                              "even study indices, rephrasings at odd ones (default: only when --prompts is the "
                              "challenge JSON {qa: {pair: [A, B]}}, which declares its pairs)")
    pairing.add_argument("--unpaired", dest="paired", action="store_false",
                         help="no pairs, even for a challenge JSON")
    b.add_argument("--select", default="random", choices=["random", "first"], help="which prompts (pairs) to use")
    b.add_argument("--prompt-ids", default=None, help="explicit 1-based prompt ids, e.g. 1,2,7,8 (overrides --select)")
    b.add_argument("--mapping", default="per-prompt", choices=["per-prompt", "per-study"],
                   help="new random letters for every prompt (default) or one mapping for the whole study")
    b.add_argument("--global-images", type=int, default=10,
                   help="images per model on the Global Preference page (one from each of N spread prompts)")
    b.add_argument("--title", default="Expert evaluation of synthetic medical images")
    b.add_argument("--key", default=None,
                   help="write the key here instead of STUDY/key.json (keep it off the rating machine)")
    b.add_argument("--seed", type=int, default=None,
                   help="make the draw reproducible (anyone with the seed and inputs can rebuild the key)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing study folder without ratings")

    k = sub.add_parser("raters", help="give raters their secret links (each sees and rates only their own answers)",
                       description="Create a secret personal link for each NAME (printed once: only its hash is "
                                   "stored). Without NAME: list the raters that have a link.")
    k.add_argument("study", help="study folder")
    k.add_argument("names", nargs="*", metavar="NAME", help="rater ids (letters, digits, '.', '_', '-', '@')")
    k.add_argument("--reissue", action="store_true",
                   help="replace the link of a rater who has one (the old link stops working)")
    k.add_argument("--url", default="http://127.0.0.1:8765/",
                   help="address raters reach the server at, for the printed links (default: serve's default)")
    k.add_argument("--db", default=None, help="ratings database (default STUDY/ratings.sqlite)")

    s = sub.add_parser("serve", help="serve the rating page for a study (127.0.0.1 by default)")
    s.add_argument("study", help="study folder")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8765, help="port (0 = any free port)")
    s.add_argument("--verbose", action="store_true", help="log every request to stderr")

    r = sub.add_parser("report", help="unblind and analyse the ratings: aspect scores, ranks vs metrics, agreement")
    r.add_argument("study", help="study folder")
    r.add_argument("--key", default=None, help="key file (default STUDY/key.json)")
    r.add_argument("--db", default=None, help="ratings database (default STUDY/ratings.sqlite)")
    r.add_argument("--out", default=None, help="report folder (default STUDY/report); new or empty unless --overwrite")
    r.add_argument("--overwrite", action="store_true", help="replace an earlier report (a folder msdm wrote)")
    r.add_argument("--extractor", default="biomedclip", choices=["biomedclip", "inception", "none"],
                   help="features for the per-prompt metrics (none: skip the automatic metrics)")
    r.add_argument("--extractor-source", default=None,
                   help="model id or local folder/file of the extractor (default: the challenge's BiomedCLIP)")
    r.add_argument("--device", default=None, help="cpu, cuda, ... for feature extraction")
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--exclude-rater", action="append", default=[], metavar="NAME",
                   help="leave this rater's answers out (test runs, a pilot rater); repeatable")


def run(args) -> int:
    cmd = getattr(args, "annotate_command", None)
    if cmd == "build":
        return _build(args)
    if cmd == "serve":
        from msdm.annotate.server import serve

        serve(args.study, host=args.host, port=args.port, verbose=args.verbose)
        return 0
    if cmd == "report":
        return _report(args)
    if cmd == "raters":
        return _raters(args)
    print("usage: msdm annotate {build,raters,serve,report} ... (msdm annotate build --help)")
    return 2


def _build(args) -> int:
    from msdm.annotate.study import StudyError, build_study, load_study, parse_model_arg

    # errors (StudyError, a missing file) are printed by `msdm` in one or two lines, exit status 2
    models = dict(parse_model_arg(m) for m in args.model)
    if len(models) != len(args.model):
        raise StudyError("two --model arguments have the same name")
    ids = [int(x) for x in args.prompt_ids.split(",") if x.strip()] if args.prompt_ids else None
    out = build_study(
        args.out, models, args.real, prompts_file=args.prompts, real_mapping=args.real_mapping,
        num_prompts=args.num_prompts, num_images=args.num_images, num_real=args.num_real,
        paired=args.paired, select=args.select, prompt_ids=ids, mapping=args.mapping,
        global_images=args.global_images, seed=args.seed, title=args.title, key_path=args.key,
        overwrite=args.overwrite,
    )
    study = load_study(out)
    n = len(study["prompts"])
    print(f"study written to {out}: {n} prompts{' in (original, rephrased) pairs' if study['paired'] else ''}, "
          f"models {', '.join(models)} behind letters "
          f"{', '.join(study['letters'])} ({args.mapping}), key in {args.key or out / 'key.json'} (never served)")
    print(f"next: msdm annotate raters {out} NAME ...   (a secret link per rater), then msdm annotate serve {out}")
    return 0


def _raters(args) -> int:
    from msdm.annotate.store import AnswerError, RatingStore
    from msdm.annotate.study import RATINGS_FILE, load_study
    from msdm.errors import InputError

    store = RatingStore(args.db or f"{args.study}/{RATINGS_FILE}", load_study(args.study))
    if not args.names:
        names = store.linked_raters()
        print("\n".join(names) if names else f"no rater has a link yet: msdm annotate raters {args.study} NAME")
        return 0
    base = args.url if args.url.endswith("/") else args.url + "/"
    for name in args.names:
        try:
            token = store.issue_link(name, reissue=args.reissue)
        except AnswerError as e:
            raise InputError(f"{e} (--reissue)" if "already has" in str(e) else str(e)) from None
        print(f"{name}\t{base}r/{token}")
    print("each link is shown once: send it to its rater privately (anyone holding it can rate as that rater)")
    return 0


def _report(args) -> int:
    from pathlib import Path

    from msdm.annotate.report import write_report
    from msdm.io import check_output_dir

    check_output_dir(args.out or Path(args.study) / "report", args.overwrite)
    out = write_report(args.study, key_path=args.key, db_path=args.db, out=args.out, extractor=args.extractor,
                       extractor_source=args.extractor_source, device=args.device, batch_size=args.batch_size,
                       exclude_raters=args.exclude_rater)
    print(f"report written to {out} (summary.md, results.json, aspects.png, ranks_vs_metrics.png)")
    return 0
