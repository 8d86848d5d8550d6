"""Shared fixtures: paths to the real sample data and tiny offline components.

Nothing here downloads. ``HF_HUB_OFFLINE=1`` is forced so that a hidden download fails fast instead of retrying.
"""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tests use tiny tensors: one intra-op thread is as fast, deterministic, and immune to OpenMP spin-waiting when
# the machine's two cores are busy (seen here: 40x slower steps with 2 threads on a loaded machine).
torch.set_num_threads(int(os.environ.get("MSDM_TEST_THREADS", "1")))

from msdm.testing import shared_data_dir, write_tiny_text_encoder  # noqa: E402


@pytest.fixture(scope="session")
def shared_data():
    d = shared_data_dir()
    if not d.exists():
        pytest.skip(f"real sample data not found at {d} (set MSDM_SHARED_DATA to its folder)")
    return d


@pytest.fixture(scope="session")
def kvasir_dir(shared_data):
    return shared_data / "kvasir-seg"


@pytest.fixture(scope="session")
def roco_dir(shared_data):
    return shared_data / "roco"


@pytest.fixture(scope="session")
def tiny_text_encoder(tmp_path_factory):
    """Folder of a tiny random BERT + word-level tokenizer that knows the MEDVQA-GI prompt words (hidden 32)."""
    return write_tiny_text_encoder(tmp_path_factory.mktemp("tiny_text_encoder"), hidden_size=32)


@pytest.fixture(scope="session")
def kvasir_samples(kvasir_dir):
    """Eight real Kvasir-SEG images at 32² in the batch convention (pixel_values in [-1, 1], caption, id)."""
    from msdm.testing import image_text_samples

    return image_text_samples(kvasir_dir / "images", n=8, size=32)


class SampleList(torch.utils.data.Dataset):
    """A list of samples indexable by ``i`` or by ``(i, epoch)`` (what EpochShuffleSampler yields)."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, key):
        return self.samples[key[0] if isinstance(key, tuple) else key]


def save_tiny_vae(path, seed=None) -> str:
    """A ``tiny``-preset ``MSDMVAEModule`` checkpoint (random weights) at ``path``: the stage-1 input of stage-2 tests."""
    import lightning.pytorch as pl

    from lightning_modules import MSDMVAEModule

    if seed is not None:
        pl.seed_everything(seed)
    tr = pl.Trainer(accelerator="cpu", max_steps=0, logger=False, enable_checkpointing=False)
    tr.strategy.connect(MSDMVAEModule(preset="tiny"))
    tr.save_checkpoint(path)
    return str(path)


def cpu_trainer(tmp_path, **kw):
    """A quiet one-device CPU Trainer (no logger, no progress bar) rooted at ``tmp_path``."""
    import lightning as L

    kw = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
          "enable_model_summary": False, "default_root_dir": tmp_path, **kw}
    return L.Trainer(**kw)


def make_loader(samples, batch_size=4, shuffle=True, seed=0):
    """Epoch-seeded, resumable loader (order and mid-epoch position survive a checkpoint) over in-memory samples."""
    from msdm.data.epoch_sampler import EpochShuffleSampler
    from msdm.data.loader import ResumableDataLoader

    return ResumableDataLoader(SampleList(samples), batch_size=batch_size, sampler=EpochShuffleSampler(len(samples), seed, shuffle))


def run_rank_script(script: str, *args, cwd, out=None, world_size: int = 2, timeout: int = 600) -> list[dict]:
    """Run ``tests/scripts/<script>`` in a fresh process (Lightning's ``strategy="ddp"`` re-launches a *file* for
    rank 1, so DDP tests cannot run in pytest's process) with one OpenMP thread per rank, and return the
    ``rank{r}.json`` of ranks ``0 .. world_size - 1`` in ``out`` (default: ``cwd``). ``args`` are passed
    as strings; a non-zero exit fails the test with the script's stderr."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(root / "tests" / "scripts" / script), *map(str, args)]
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = Path(out if out is not None else cwd)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world_size)]


# ---- scale tests (tests/test_scale.py, issue 14): full-width generators, minutes each; opt-in ----
def pytest_addoption(parser):
    parser.addoption("--scale", action="store_true",
                     help="also run the @pytest.mark.scale tests (full-width generators; .ci/run --scale sets "
                          "MSDM_SCALE_TESTS=1, which does the same)")


def pytest_collection_modifyitems(config, items):
    wanted = config.getoption("--scale") or os.environ.get("MSDM_SCALE_TESTS") == "1" or \
        "scale" in (config.option.markexpr or "")
    if wanted:
        return
    keep = [i for i in items if "scale" not in i.keywords]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if "scale" in i.keywords])
        items[:] = keep
