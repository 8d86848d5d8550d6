"""Child of tests/test_resume.py: trains one module and waits at a known step for the parent's signal.

    python tests/scripts/resume_child.py KIND ROOT ASSETS_JSON MODE     (MODE: kill | sigterm | sigusr1)

``kill``: every-3-steps checkpoints; the parent sends SIGKILL during step 5 (after the step-3 checkpoint).
``sigterm`` / ``sigusr1``: the parent's signal arrives during step 2; ``ResumableCheckpoint`` saves ``last`` at the
end of that step and the run exits cleanly (exit code 0).
"""

import json
import os
import sys

import torch

torch.set_num_threads(int(os.environ.get("MSDM_TEST_THREADS", "1")))

import resume_harness as h  # noqa: E402


def main() -> int:
    kind, root, assets_json, mode = sys.argv[1:5]
    assets = json.loads(open(assets_json).read())
    marker = os.path.join(root, "waiting")
    if mode == "kill":
        h.fit(kind, assets, root, callbacks=[h.WaitForParent(5, marker)])
        return 1  # not reached: SIGKILL ends the process while it waits
    try:
        h.fit(kind, assets, root, callbacks=[h.WaitForParent(h.SIGNAL_AT_STEP, marker)], every_n_train_steps=None)
    except SystemExit as e:  # SIGTERM: Lightning's clean SIGTERMException after the batch
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
