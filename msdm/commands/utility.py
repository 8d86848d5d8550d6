"""``msdm utility``: does synthetic data help a classifier? Train the same classifier on real, real + synthetic and
synthetic-only data over several seeds and real-data fractions; report the differences with confidence intervals.

Steps (docs/utility.md):

1. load the real labelled training and test sets (class folders, an image + label table, or a HF dataset);
2. for each ``--generator``: generate ``--num-per-class`` images per class from the class prompts (by default as
   many as the plan needs), sharded and with provenance as ``msdm generate`` writes them — or take a folder
   already generated;
3. for every (real fraction, seed, arm) train the classifier with early stopping on a real validation split carved
   from the run's real subset, then test it once on the real test set;
4. write ``results.json``, ``results.md`` (mean ± std, Δ vs real-only with a paired bootstrap interval and a
   verdict) and ``results.png`` into ``--out``.

Finished runs are kept in ``OUT/runs/…/result.json`` with a fingerprint of everything that determines them;
rerunning the command continues an interrupted experiment and redoes only runs whose settings changed.
"""

from __future__ import annotations

NAME = "utility"
HELP = ("does synthetic data help a classifier? train one on real, real+synthetic and synthetic-only data over seeds "
        "and real-data fractions; report metric differences with confidence intervals")


def _floats(text: str) -> list[float]:
    return [float(x) for x in str(text).split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip()]


def add_arguments(parser) -> None:
    from msdm.dtypes import DTYPE_CHOICES
    from msdm.generators.samplers import sampler_choices

    d = parser.add_argument_group("real data")
    d.add_argument("--train", required=True, help="real labelled training set: class folders, a label table "
                   "(.csv/.tsv/.jsonl/.json), or a Hugging Face dataset (local copy or cached id)")
    d.add_argument("--test", required=True, help="real labelled test set (same forms; never used for training or "
                   "early stopping)")
    d.add_argument("--train-split", default="train", help="HF dataset split of --train (default: train)")
    d.add_argument("--test-split", default="test", help="HF dataset split of --test (default: test)")
    d.add_argument("--images-dir", default=None, help="folder the table's image paths are relative to (default: the "
                   "table's folder)")
    d.add_argument("--image-column", default=None, help="table/dataset image column (default: guessed)")
    d.add_argument("--label-column", default=None, help="table/dataset label column (default: guessed)")
    d.add_argument("--label-columns", default=None, help="multi-label: comma-separated 0/1 columns, one per label")
    d.add_argument("--multilabel", action="store_true", help="multi-label attribute targets (label sets a+b; one "
                   "sigmoid per label)")
    d.add_argument("--resolution", type=int, default=64, help="classifier input side in pixels (default 64)")
    d.add_argument("--aspect", default="crop", choices=["crop", "pad", "squash"], help="how images become square")
    d.add_argument("--on-bad-sample", default="raise", choices=["raise", "skip"],
                   help="bad images: report all and stop (default), or leave them out and count them")

    g = parser.add_argument_group("generators")
    g.add_argument("--prompts", default=None, help='class-prompt JSON {"class": ["prompt", ...]} (multi-label: keys '
                   'are label sets "a+b", "none")')
    g.add_argument("--prompt", action="append", default=[], metavar="CLASS=TEXT",
                   help="a prompt for a class (repeat for several classes or paraphrases)")
    g.add_argument("--generator", action="append", default=[], metavar="[NAME=]SPEC",
                   help="MSDM pipeline folder, LoRA folder(s) (Kandinsky: prior,decoder), a generated folder "
                        "(challenge layout), or render:follow / render:contradict (synthetic task); repeatable")
    g.add_argument("--num-per-class", type=int, default=None,
                   help="images generated per class (default: as many as the plan needs)")
    g.add_argument("--gen-seed", type=int, default=0, help="generation seed: image k uses seed + k")
    g.add_argument("--gen-steps", type=int, default=None, help="sampling steps (default: the generator's)")
    g.add_argument("--guidance-scale", type=float, default=None, help="guidance scale (default: the generator's)")
    g.add_argument("--sampler", default=None, choices=sampler_choices(), help="MSDM sampler (default: the pipeline's)")
    g.add_argument("--gen-resolution", type=int, default=None,
                   help="LoRA / render generators: image side (default: --resolution)")
    g.add_argument("--gen-batch-size", type=int, default=16)
    g.add_argument("--gen-device", default=None, help="generation device (default: cuda:LOCAL_RANK if available)")
    g.add_argument("--gen-dtype", default="fp32", choices=list(DTYPE_CHOICES))
    g.add_argument("--base-model", action="append", default=[], metavar="KIND=ID",
                   help="LoRA base model override: flux=..., prior=..., decoder=... (default: msdm_lora.json's)")
    g.add_argument("--pipeline-kwarg", action="append", default=[], metavar="KEY=VALUE",
                   help="LoRA generators: extra pipeline call argument (repeat; VALUE read as JSON when it parses, "
                        "e.g. max_sequence_length=256)")
    g.add_argument("--generate-arg", action="append", default=[], metavar="ARG",
                   help="MSDM pipelines: an `msdm generate` sampling option (repeat; e.g. --generate-arg=--eta=0)")

    p = parser.add_argument_group("plan")
    p.add_argument("--fractions", type=_floats, default=[0.1, 0.25, 1.0], help="real-data fractions (default 0.1,0.25,1)")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="seeds (default 0,1,2)")
    p.add_argument("--ratios", type=_floats, default=[1.0], help="synthetic images per real image in the mixed arms")
    p.add_argument("--arms", default="real,mixed,synthetic",
                   help="which arms besides real-only: mixed (real + synthetic), synthetic (synthetic only)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="of each run's real subset, kept for validation")
    p.add_argument("--balance", default="real", choices=["real", "equal"],
                   help="synthetic class mix: as the real subset's (default), or equal per class")

    c = parser.add_argument_group("classifier")
    c.add_argument("--arch", default="small-cnn", choices=["small-cnn", "resnet18"])
    c.add_argument("--width", type=int, default=32, help="small-cnn base width")
    c.add_argument("--weights", default=None, help="local ResNet-18 state dict to start from (default: random init)")
    c.add_argument("--lr", type=float, default=1e-3)
    c.add_argument("--weight-decay", type=float, default=1e-4)
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--max-epochs", type=int, default=40)
    c.add_argument("--patience", type=int, default=8, help="epochs without a better validation value before stopping")
    c.add_argument("--monitor", default="loss", choices=["loss", "auroc", "balanced_accuracy", "accuracy", "macro_f1"],
                   help="what early stopping and the best-checkpoint choice read on the real validation split "
                        "(default loss; docs/utility.md shows why not auroc on tiny splits)")
    c.add_argument("--hflip", action="store_true", help="random horizontal flips of training images")
    c.add_argument("--accelerator", default="auto", help="cpu, gpu, auto")
    c.add_argument("--devices", default="1", help="devices per run (DDP with > 1, or under torchrun)")
    c.add_argument("--strategy", default="auto", help="Lightning strategy (ddp, ...)")
    c.add_argument("--num-workers", type=int, default=0)
    c.add_argument("--deterministic", default="auto", choices=["auto", "true", "warn"],
                   help="torch deterministic algorithms: auto = true on CPU, warn on GPUs")

    o = parser.add_argument_group("output")
    o.add_argument("--out", required=True, help="experiment folder (generated images, runs, results.*)")
    o.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates (default 1000)")
    o.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    o.add_argument("--keep-checkpoints", action="store_true", help="keep each run's best checkpoint")
    o.add_argument("--title", default="", help="title of the plot")


def _kwargs(pairs: list[str]) -> dict | None:
    import json

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"msdm utility: --pipeline-kwarg {pair!r}: write KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out or None


def _fingerprint(obj) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _data_fingerprint(data) -> str:
    import hashlib

    h = hashlib.sha256()
    h.update(data.images.numpy().tobytes())
    h.update(data.targets.numpy().tobytes())
    h.update("\n".join(data.ids).encode())
    return h.hexdigest()[:16]


def _train_and_test(run, real, test, pools, plan, args, run_dir, describe):
    """One run: fit with early stopping on the real validation split, test the best weights once."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from datamodules.utility import UtilityDataModule
    from lightning_modules.classifier import ClassifierModule
    from msdm.utility.plan import run_indices

    idx = run_indices(run, real.strata(), {k: v.strata() for k, v in pools.items()}, plan, describe)
    pl.seed_everything(run.seed, workers=True, verbose=False)  # the same initialisation in every arm of a seed
    dm = UtilityDataModule(real, test, idx["real_train"], idx["real_val"], pools.get(run.arm.generator),
                           idx["synthetic"], batch_size=args.batch_size, num_workers=args.num_workers, seed=run.seed,
                           hflip=args.hflip)
    model = ClassifierModule(num_classes=len(real.classes), multilabel=real.multilabel, arch=args.arch,
                             width=args.width, weights=args.weights, lr=args.lr, weight_decay=args.weight_decay,
                             class_names=real.classes)
    monitor, mode = f"val/{args.monitor}", "min" if args.monitor == "loss" else "max"
    ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode=mode, save_top_k=1,
                           save_weights_only=True, enable_version_counter=False)
    stop = EarlyStopping(monitor=monitor, mode=mode, patience=args.patience)
    accelerator = args.accelerator
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    deterministic = {"true": True, "warn": "warn", "auto": True if on_cpu else "warn"}[args.deterministic]
    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    trainer = pl.Trainer(accelerator=accelerator, devices=devices, strategy=args.strategy, max_epochs=args.max_epochs,
                         deterministic=deterministic, logger=CSVLogger(run_dir, name="", version="log"),
                         callbacks=[ckpt, stop], enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, log_every_n_steps=max(1, len(dm.train_dataloader()) // 2))
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, ckpt_path=ckpt.best_model_path or None, verbose=False)
    preds = model.test_predictions
    metrics = {k.removeprefix("test/"): float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    if not args.keep_checkpoints and ckpt.best_model_path and trainer.is_global_zero:
        import shutil

        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    record = {"key": run.key, "fraction": run.fraction, "arm": run.arm.name, "generator": run.arm.generator,
              "ratio": run.arm.ratio, "seed": run.seed, "n_real": idx["n_real"], "n_synthetic": idx["n_synthetic"],
              "n_val": len(idx["real_val"]), "epochs": int(trainer.current_epoch),
              "best_val": {monitor: float(ckpt.best_model_score) if ckpt.best_model_score is not None else None},
              "metrics": metrics}
    return record, preds["probs"].numpy(), trainer.is_global_zero


def run(args) -> int:
    import json
    import logging
    import time
    import warnings
    from pathlib import Path

    import lightning.pytorch  # noqa: F401  (imported first: it sets its loggers' levels on import)
    import numpy as np

    from msdm.io import atomic_file, write_json, write_text
    from msdm.utility import report as rep
    from msdm.utility.class_prompts import read_class_prompts
    from msdm.utility.data import load_generated, load_labelled
    from msdm.utility.generators import images_per_prompt, materialize, parse_generator
    from msdm.utility.plan import ExperimentPlan, make_arms, required_per_stratum

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # one line per run from us instead of Lightning's banners
    # Advice that does not apply to many small in-memory runs (data are decoded tensors; epochs may be one batch).
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    # 1. real data ------------------------------------------------------------------------------------------------
    load = {"multilabel": args.multilabel, "resolution": args.resolution, "aspect": args.aspect,
            "image_column": args.image_column, "label_column": args.label_column,
            "label_columns": args.label_columns.split(",") if args.label_columns else None,
            "images_dir": args.images_dir, "on_bad_sample": args.on_bad_sample}
    real = load_labelled(args.train, args.train_split, **load)
    test = load_labelled(args.test, args.test_split, classes=real.classes, **load)
    print(f"real train: {len(real)} images {real.class_counts()}; test: {len(test)} images {test.class_counts()}")
    names = real.classes

    def describe(stratum):
        if isinstance(stratum, tuple):
            return "+".join(names[j] for j in stratum) or "none"
        return names[stratum]

    # 2. generators -------------------------------------------------------------------------------------------------
    specs = [parse_generator(g) for g in args.generator]
    if len({s.name for s in specs}) != len(specs):
        raise SystemExit(f"msdm utility: generator names repeat ({[s.name for s in specs]}); write NAME=PATH")
    kinds = {k.strip() for k in args.arms.split(",") if k.strip()}
    unknown = kinds - {"real", "mixed", "synthetic"}
    if unknown:
        raise SystemExit(f"msdm utility: unknown arm kind(s) {sorted(unknown)}; use real, mixed, synthetic")
    arms = make_arms([s.name for s in specs], args.ratios, True, "mixed" in kinds, "synthetic" in kinds)
    extra = {k: getattr(args, k) for k in ("arch", "width", "weights", "lr", "weight_decay", "batch_size",
                                             "max_epochs", "patience", "monitor", "hflip", "resolution", "aspect")}
    plan = ExperimentPlan(args.fractions, args.seeds, arms, args.val_fraction, args.balance, extra)
    pools = {}
    if specs:
        if not args.prompts and not args.prompt:
            raise SystemExit("msdm utility: generators need class prompts: --prompts FILE or --prompt CLASS=TEXT")
        cp = read_class_prompts(args.prompts, args.prompt, args.multilabel)
        if not args.multilabel:
            missing = sorted(set(real.classes) - {g.name for g in cp.groups})
            extra_cls = sorted({g.name for g in cp.groups} - set(real.classes))
            if extra_cls:
                raise SystemExit(f"msdm utility: prompt classes {extra_cls} are not classes of --train {real.classes}")
            if missing and args.balance == "real":
                raise SystemExit(f"msdm utility: no prompts for class(es) {missing}; add them, or use --balance equal")
        write_json(out / "class_prompts.json", cp.to_json())
        pool_strata = None
        if args.multilabel:
            idx = {c: j for j, c in enumerate(real.classes)}
            pool_strata = [tuple(sorted(idx[lab] for lab in g.labels if lab in idx)) for g in cp.groups]
        need = args.num_per_class or required_per_stratum(real.strata(), plan, pool_strata)
        n_img = images_per_prompt([len(g.prompts) for g in cp.groups], max(1, need))
        print(f"generators: {len(specs)}; {max(1, need)} images per class needed → {n_img} per prompt")
        for s in specs:
            folder = materialize(s, cp.prompts(), out / "generated" / s.name, n_img, seed=args.gen_seed,
                                 resolution=args.gen_resolution or args.resolution, steps=args.gen_steps,
                                 guidance_scale=args.guidance_scale, sampler=args.sampler,
                                 batch_size=args.gen_batch_size, device=args.gen_device, dtype=args.gen_dtype,
                                 base_models=dict(b.split("=", 1) for b in args.base_model) or None,
                                 generate_args=args.generate_arg, call_kwargs=_kwargs(args.pipeline_kwarg))
            pools[s.name] = load_generated(folder, cp, real.classes, s.name, args.resolution, args.aspect,
                                           args.on_bad_sample)
            print(f"  {s.name}: {len(pools[s.name])} images {pools[s.name].class_counts()}")

    # 3. runs -------------------------------------------------------------------------------------------------------
    # A run's fingerprint holds only what determines that run, so adding a generator, a ratio or a fraction to an
    # experiment reuses every run it already has.
    data_fp = {"train": _data_fingerprint(real), "test": _data_fingerprint(test), "classes": real.classes,
               "multilabel": real.multilabel, "val_fraction": plan.val_fraction, "classifier": plan.extra}
    pool_fp = {k: _data_fingerprint(v) for k, v in pools.items()}
    records, probs = [], {}
    global_zero = True  # the report is written once, by rank 0 of the training runs
    runs = plan.runs()
    for k, r in enumerate(runs, 1):
        run_dir = out / "runs" / r.key
        settings = {**data_fp, "fraction": r.fraction, "seed": r.seed, "arm": [r.arm.generator, r.arm.ratio,
                    r.arm.use_real], "pool": pool_fp.get(r.arm.generator),
                    "balance": plan.balance if r.arm.generator else None}
        fp = _fingerprint(settings)
        done = run_dir / "result.json"
        if done.is_file() and (run_dir / "test_probs.npy").is_file():
            rec = json.loads(done.read_text())
            if rec.get("fingerprint") == fp:
                records.append(rec)
                probs[r.key] = np.load(run_dir / "test_probs.npy")
                print(f"[{k}/{len(runs)}] {r.key}: done earlier")
                continue
        t = time.perf_counter()
        rec, p, is_zero = _train_and_test(r, real, test, pools, plan, args, run_dir, describe)
        global_zero = global_zero and is_zero
        rec["fingerprint"] = fp
        rec["seconds"] = round(time.perf_counter() - t, 2)
        records.append(rec)
        probs[r.key] = p
        if is_zero:
            with atomic_file(run_dir / "test_probs.npy") as f:
                np.save(f, p)
            write_json(done, rec)
        m = rec["metrics"]
        print(f"[{k}/{len(runs)}] {r.key}: {rec['n_real']} real + {rec['n_synthetic']} synthetic, "
              f"{rec['epochs']} epochs → acc {m['accuracy']:.3f}, bal.acc {m['balanced_accuracy']:.3f}, "
              f"AUROC {m['auroc']:.3f} ({rec['seconds']:.1f} s)")

    # 4. report -----------------------------------------------------------------------------------------------------
    from msdm.generators import env_rank_world

    if not global_zero or env_rank_world()[0] != 0:
        return 0
    rows = rep.summarize(records, probs, test.targets.numpy(), test.strata(), real.multilabel,
                         [a.name for a in arms], plan.fractions, plan.seeds, args.bootstrap, 0, args.level)
    result = {"format": "msdm-utility/1", "classes": real.classes, "multilabel": real.multilabel,
              "train": {"source": str(args.train), "n": len(real), "per_class": real.class_counts()},
              "test": {"source": str(args.test), "n": len(test), "per_class": test.class_counts()},
              "generators": {s.name: {"kind": s.kind, "paths": s.paths, "mode": s.mode,
                                      "n": len(pools[s.name]), "per_class": pools[s.name].class_counts()}
                             for s in specs},
              "plan": plan.to_json(), "bootstrap": {"replicates": args.bootstrap, "level": args.level},
              "rows": rows, "runs": [{k: v for k, v in r.items() if k != "fingerprint"} for r in records]}
    write_json(out / "results.json", result)
    table = rep.markdown(rows, args.level, args.bootstrap)
    write_text(out / "results.md", table)
    rep.plot(rows, out / "results.png", args.title)
    print("\n" + table)
    print(f"written: {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'} "
          f"({time.perf_counter() - t_start:.0f} s)")
    return 0
