"""SyntheticGIDataModule: batch convention, per-epoch captions through a real Trainer (with and without worker
processes), and a run resumed at an epoch boundary seeing the same order and captions as an uninterrupted one."""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from datamodules.synthetic import DEFAULT_VALIDATION_PROMPTS, SyntheticGIDataModule
from msdm.synthetic import captions_for, sample_attributes

N, RES, BS = 12, 32, 4

pytestmark = pytest.mark.filterwarnings(
    "ignore:You passed in a `val_dataloader` but have no `validation_step`",  # the recorder only trains
    "ignore:Be aware that when using `ckpt_path`",
)


class _Recorder(pl.LightningModule):
    """Trains nothing; records (epoch, id, caption) of every training sample in the order seen."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, str, str]] = []

    def training_step(self, batch, batch_idx):
        x = batch["pixel_values"]
        assert x.shape[1:] == (3, RES, RES) and x.dtype == torch.float32
        assert len(batch["caption"]) == len(batch["id"]) == len(batch["attributes"]) == x.shape[0]
        self.seen += [(self.current_epoch, i, c) for i, c in zip(batch["id"], batch["caption"])]
        return (self.w * x.mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(max_epochs, num_workers=0, ckpt_dir=None, ckpt_path=None):
    dm = SyntheticGIDataModule(num_train=N, num_val=4, resolution=RES, seed=5, batch_size=BS, num_workers=num_workers)
    model = _Recorder()
    callbacks = [ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0)] if ckpt_dir else []
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=bool(ckpt_dir),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return dm, model.seen


@pytest.fixture(scope="module")
def three_epochs():
    return _fit(3)


def test_batches_follow_the_convention():
    dm = SyntheticGIDataModule(num_train=8, num_val=6, resolution=RES, batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (4, 3, RES, RES) and batch["pixel_values"].dtype == torch.float32
    assert -1 <= batch["pixel_values"].min() and batch["pixel_values"].max() <= 1
    assert all(isinstance(c, str) and c.startswith("Generate") for c in batch["caption"])
    assert all(isinstance(i, str) for i in batch["id"]) and len(set(batch["id"])) == 4
    val = [b for b in dm.val_dataloader()]
    assert [len(b["id"]) for b in val] == [4, 2]
    assert [b["caption"] for b in dm.val_dataloader()] == [b["caption"] for b in val]  # fixed captions
    test_ids = {i for b in dm.test_dataloader() for i in b["id"]}
    assert not test_ids & {i for b in val for i in b["id"]}
    assert dm.train_dataloader().persistent_workers is False
    assert SyntheticGIDataModule(num_workers=2).setup("fit") is None  # cheap: nothing renders before access
    assert SyntheticGIDataModule(num_workers=2).train_dataloader().persistent_workers is True


def test_validation_prompts():
    dm = SyntheticGIDataModule()
    assert dm.validation_prompts == list(DEFAULT_VALIDATION_PROMPTS) and len(dm.validation_prompts) >= 6
    assert SyntheticGIDataModule(val_prompts=["Generate an image with 1 polyp."]).validation_prompts == [
        "Generate an image with 1 polyp."
    ]
    # Every default prompt is something the renderer actually produces (so adherence can be checked).
    produced = {c for i in range(150) for c in captions_for(sample_attributes(np.random.default_rng(i)))}
    assert set(DEFAULT_VALIDATION_PROMPTS) <= produced


def _by_epoch(seen):
    out = {}
    for epoch, sample_id, caption in seen:
        out.setdefault(epoch, []).append((sample_id, caption))
    return out


def _check_epochs(dm, seen):
    epochs = _by_epoch(seen)
    assert sorted(epochs) == [0, 1, 2]
    index_of = {dm.train_set.sample_id(i): i for i in range(N)}
    for epoch, rows in epochs.items():
        assert sorted(i for i, _ in rows) == sorted(index_of)  # every image once per epoch
        for sample_id, caption in rows:  # the caption the dataset defines for (index, epoch)
            assert caption == dm.train_set.caption(index_of[sample_id], epoch)
    captions = [dict(epochs[e]) for e in range(3)]
    assert sum(captions[0][i] != captions[1][i] for i in index_of) >= 3  # captions move between epochs
    assert [i for i, _ in epochs[0]] != [i for i, _ in epochs[1]]  # so does the order


def test_captions_change_per_epoch_in_a_trainer(three_epochs):
    _check_epochs(*three_epochs)


def test_epoch_reaches_persistent_workers(three_epochs):
    dm, seen = _fit(3, num_workers=1)
    _check_epochs(dm, seen)
    assert seen == three_epochs[1]  # identical to the single-process run


def test_resume_at_epoch_boundary_matches_uninterrupted_run(three_epochs, tmp_path):
    # With a worker process the first iterator of a resumed run is created (and its indices drawn) before
    # Lightning calls set_epoch: the DataModule must start the sampler at the restored epoch.
    _fit(2, ckpt_dir=tmp_path)
    _, resumed = _fit(3, num_workers=1, ckpt_path=str(tmp_path / "last.ckpt"))
    assert [row for row in resumed if row[0] == 2] == [row for row in three_epochs[1] if row[0] == 2]
    assert {row[0] for row in resumed} == {2}


def test_ddp_sampler_wrapper_forwards_the_epoch():
    """Under DDP Lightning wraps the sampler in DistributedSamplerWrapper: each rank gets half, at the right epoch."""
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    from msdm.data.epoch_sampler import EpochShuffleSampler

    ranks = [DistributedSamplerWrapper(EpochShuffleSampler(10, seed=1), num_replicas=2, rank=r) for r in (0, 1)]
    for epoch in (0, 4):
        for s in ranks:
            s.set_epoch(epoch)
        parts = [list(s) for s in ranks]
        assert {e for part in parts for _, e in part} == {epoch}
        assert sorted(i for part in parts for i, _ in part) == list(range(10))
