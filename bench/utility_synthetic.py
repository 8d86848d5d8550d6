"""The utility table of docs/utility.md: does each generator's data help a polyp classifier on the synthetic task?

Writes the synthetic task (polyp present vs absent; ``--n-train-per-class`` "real" images per class for training,
``--n-test-per-class`` for testing, drawn from the default scene distribution) into ``OUT/task`` and runs
``msdm utility`` on it with

* ``render:follow`` — a perfect generator (scenes drawn with the prompt's facts): the ceiling;
* ``render:contradict`` — images that contradict their prompts: the measurement must show harm;
* ``--pipeline PATH`` (optional, repeatable as NAME=PATH) — an MSDM pipeline, e.g. the quickstart's.

    python bench/utility_synthetic.py --out runs/utility_synthetic --pipeline msdm-quickstart=/work/runs/qs_base/pipeline

Everything after ``--`` goes to ``msdm utility`` unchanged (e.g. ``-- --seeds 0,1,2,3,4``). The exact command is
printed first; the table is ``OUT/results.md`` (and .json, .png). Finished runs are reused when rerun, so adding a
pipeline later trains only its arms.
"""

import argparse
import shlex
import sys
import time
from pathlib import Path

from msdm.cli import main as msdm_main
from msdm.utility.synthetic_task import write_synthetic_task


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/utility_synthetic")
    ap.add_argument("--pipeline", action="append", default=[], help="[NAME=]MSDM pipeline folder (repeatable)")
    ap.add_argument("--n-train-per-class", type=int, default=40)
    ap.add_argument("--n-test-per-class", type=int, default=100)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--fractions", default="0.25,0.5,1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--ratios", default="1,3")
    ap.add_argument("--no-render", action="store_true", help="leave out the render:follow / render:contradict arms")
    a = ap.parse_args(argv)
    out = Path(a.out)
    task = out / "task"
    if not (task / "prompts.json").is_file():
        write_synthetic_task(task, "polyp", a.n_train_per_class, a.n_test_per_class, a.resolution, seed=0)
    gens = [] if a.no_render else ["render:follow", "render:contradict"]
    for p in a.pipeline:
        gens.append(p if "=" in p else f"msdm-{Path(p).name}={p}")
    cmd = ["utility", "--train", str(task / "train"), "--test", str(task / "test"), "--prompts",
           str(task / "prompts.json"), "--out", str(out)]
    for g in gens:
        cmd += ["--generator", g]
    cmd += ["--fractions", a.fractions, "--seeds", a.seeds, "--ratios", a.ratios, "--arms", "mixed,synthetic",
            # the classifier: a small CNN from scratch at the pipeline's 64 px, flips, early stopping on real-val loss
            "--resolution", str(a.resolution), "--width", "8", "--batch-size", "16", "--lr", "3e-3",
            "--max-epochs", "40", "--patience", "10", "--hflip",
            # the quickstart's sampling settings (dpm++sde, 20 steps; guidance: each pipeline folder's own, which
            # is what its run sampled with — 10 for today's quickstart; pass -- --guidance-scale G to override)
            "--sampler", "dpm++sde", "--gen-steps", "20",
            "--title", "polyp vs no polyp, synthetic task", *extra]
    print("msdm " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t = time.perf_counter()
    rc = msdm_main(cmd)
    print(f"bench/utility_synthetic.py: {time.perf_counter() - t:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
