"""Exact resume from any stop, for every generator module (tests/resume_harness.py has the set-up).

Stops: ``max_steps`` mid-epoch (``last`` written at the final step), a mid-epoch ``every_n_train_steps`` checkpoint,
SIGTERM and SIGUSR1 delivered to the training process (in this process; and sent by a parent to a subprocess, with
``kill -9`` after a checkpoint, in the subprocess tests below). The resumed run's final weights — every trainable
tensor, the EMA, the latent scale — must equal an uninterrupted run's exactly (``torch.equal``), on CPU.
"""

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import resume_harness as h

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return h.write_assets(tmp_path_factory.mktemp("resume_assets"))


@pytest.fixture(scope="module")
def reference(assets, tmp_path_factory):
    """Per module: the uninterrupted run's final weights and its folder (mid-epoch step checkpoints kept)."""
    out = {}

    def get(kind):
        if kind not in out:
            root = tmp_path_factory.mktemp(f"ref_{kind}")
            out[kind] = (h.final_weights(h.fit(kind, assets, root)), root)
        return out[kind]

    return get


def _check(kind, assets, ckpt, root, reference):
    diff, equal = h.resume_and_compare(kind, assets, ckpt, root, reference(kind)[0])
    assert equal, f"{kind}: resumed weights differ from the uninterrupted run's by up to {diff:.3g}"


@pytest.mark.parametrize("kind", h.KINDS)
def test_resume_after_max_steps_stop(kind, assets, reference, tmp_path):
    h.fit(kind, assets, tmp_path, max_steps=h.STOP_AT_STEP)
    # the final steps are saved although the run stopped mid-epoch (ModelCheckpoint alone leaves step 3 here)
    assert h.checkpoint_step(tmp_path / "last.ckpt") == h.STOP_AT_STEP
    _check(kind, assets, tmp_path / "last.ckpt", tmp_path, reference)


@pytest.mark.parametrize("kind", h.KINDS)
def test_resume_from_a_mid_epoch_step_checkpoint(kind, assets, reference, tmp_path):
    ckpt = reference(kind)[1] / f"epoch=0-step={h.EVERY_N_STEPS}.ckpt"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _check(kind, assets, ckpt, tmp_path, reference)
    assert not [w for w in caught if "not resumable" in str(w.message)]  # Lightning's mid-epoch resume warning


@pytest.mark.parametrize("sig", ["sigterm", "sigusr1"])
@pytest.mark.parametrize("kind", h.KINDS)
def test_signal_saves_stops_and_resumes_exactly(kind, sig, assets, reference, tmp_path):
    signum = h.SIGNALS[sig]
    before = signal.getsignal(signum)
    callbacks = [h.SignalAt(h.SIGNAL_AT_STEP, signum)]
    if sig == "sigterm":  # Lightning turns SIGTERM into a clean SystemExit after the batch (SIGTERMException)
        with pytest.raises(SystemExit) as exc:
            h.fit(kind, assets, tmp_path, callbacks=callbacks, every_n_train_steps=None)
        assert not exc.value.code
    else:  # SIGUSR1: the callback stops the trainer; fit returns
        h.fit(kind, assets, tmp_path, callbacks=callbacks, every_n_train_steps=None)
    assert signal.getsignal(signum) == before  # handlers restored after fit
    assert h.checkpoint_step(tmp_path / "last.ckpt") == h.SIGNAL_AT_STEP + 1  # the step in flight completed
    _check(kind, assets, tmp_path / "last.ckpt", tmp_path, reference)


# ---------------------------------------------------------------------------------------------------- subprocesses
def _child(kind, mode, assets, root, env_extra=None):
    h.save_assets(assets, root / "assets.json")
    marker = root / "waiting"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "MSDM_TEST_THREADS": "1",
           **(env_extra or {})}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/scripts/resume_child.py"), kind, str(root),
                             str(root / "assets.json"), mode], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"child never reached the signal point:\n{proc.communicate()[0][-4000:]}")
        time.sleep(0.1)
    proc.send_signal({"kill": signal.SIGKILL, "sigterm": signal.SIGTERM, "sigusr1": signal.SIGUSR1}[mode])
    out = proc.communicate(timeout=600)[0]
    return proc.returncode, out


# Signals sent by a parent: every stop kind for the MSDM U-Net; kill -9 for every module (the in-process tests above
# already cover each module's signal path; a subprocess costs 30-45 s of imports on a loaded 2-core machine: slow).
SUBPROCESS_CASES = [pytest.param("unet", m, marks=pytest.mark.slow) for m in ("kill", "sigterm", "sigusr1")] + [
    pytest.param(k, "kill", marks=pytest.mark.slow) for k in h.KINDS if k != "unet"]


@pytest.mark.parametrize(("kind", "mode"), SUBPROCESS_CASES)
def test_subprocess_stop_then_resume_exactly(kind, mode, assets, reference, tmp_path):
    rc, out = _child(kind, mode, assets, tmp_path)
    if mode == "kill":
        assert rc == -signal.SIGKILL, out[-3000:]
        # killed during step 5: the step-3 checkpoint is what survives (written atomically, loads cleanly)
        assert h.checkpoint_step(tmp_path / "last.ckpt") == h.EVERY_N_STEPS
        assert not list(tmp_path.glob("*.tmp")), out[-3000:]
    else:
        assert rc == 0, out[-3000:]  # saved and exited cleanly
        assert h.checkpoint_step(tmp_path / "last.ckpt") == h.SIGNAL_AT_STEP + 1
    _check(kind, assets, tmp_path / "last.ckpt", tmp_path, reference)


@pytest.mark.slow
def test_sigusr1_under_slurm_requeues_the_job(assets, tmp_path):
    """With SLURM's environment, SIGUSR1 saves, stops and runs ``scontrol requeue <job id>`` (a stand-in
    ``scontrol`` on PATH records the call: there is no SLURM here)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "scontrol.log"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1",
             "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NAME": "msdm-test"}
    rc, out = _child("vae", "sigusr1", assets, tmp_path, env_extra=slurm)
    assert rc == 0, out[-3000:]
    assert log.read_text().split() == ["requeue", "4242"]
    assert h.checkpoint_step(tmp_path / "last.ckpt") == h.SIGNAL_AT_STEP + 1
    assert not list(tmp_path.glob("hpc_ckpt_*.ckpt"))  # Lightning's mid-step HPC save did not run
