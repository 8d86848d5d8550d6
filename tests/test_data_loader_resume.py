"""``ResumableDataLoader`` (pure torch): a loader restored from ``state_dict()`` continues the interrupted epoch with
the next batch — also with worker processes — and starts later epochs from their beginning."""

import pytest
import torch

from msdm.data.epoch_sampler import EpochShuffleSampler
from msdm.data.loader import ResumableDataLoader


class Keyed(torch.utils.data.Dataset):
    """Items ``index * 100 + epoch``: a batch shows which samples of which epoch it holds."""

    def __len__(self):
        return 10

    def __getitem__(self, key):
        return key[0] * 100 + key[1]


def _loader(num_workers=0, batch_size=3, seed=1):
    return ResumableDataLoader(Keyed(), batch_size=batch_size, sampler=EpochShuffleSampler(10, seed=seed),
                               num_workers=num_workers, persistent_workers=num_workers > 0)


def _epoch(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return [b.tolist() for b in loader]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_restored_loader_continues_the_epoch(num_workers):
    full = _loader(num_workers)
    reference = [_epoch(full, e) for e in (0, 1, 2)]
    first = _loader(num_workers)
    first.sampler.set_epoch(1)
    it = iter(first)
    seen = [next(it).tolist() for _ in range(2)]
    state = first.state_dict()
    assert (state["epoch"], state["position"], state["length"]) == (1, 2, 4)

    resumed = _loader(num_workers)
    resumed.load_state_dict(state)
    assert len(resumed) == 4  # the epoch's length is unchanged by the pending skip
    rest = _epoch(resumed, 1)
    assert seen + rest == reference[1]
    assert resumed.state_dict()["position"] == 4
    assert _epoch(resumed, 2) == reference[2]  # the next epoch starts from its beginning


def test_a_complete_epoch_or_another_epoch_is_not_skipped():
    loader = _loader()
    loader.load_state_dict({"epoch": 0, "position": 4, "batch_size": 3, "num_replicas": 1, "length": 4})
    assert _epoch(loader, 1) == _epoch(_loader(), 1)  # the saved epoch was complete: the run moved on
    loader.load_state_dict({"epoch": 0, "position": 2, "batch_size": 3, "num_replicas": 1, "length": 4})
    assert _epoch(loader, 3) == _epoch(_loader(), 3)  # another epoch runs: no skip


def test_skip_is_bound_to_the_first_iterator():
    """Lightning creates its iterator first; a later pass over the same loader (a cache fill) must not take the
    skip away from it."""
    loader = _loader()
    loader.load_state_dict({"epoch": 0, "position": 3, "batch_size": 3, "num_replicas": 1, "length": 4})
    lightning_iter = iter(loader)
    other = [b.tolist() for b in loader]  # a full pass by someone else
    assert other == _epoch(_loader(), 0)
    assert [b.tolist() for b in lightning_iter] == _epoch(_loader(), 0)[3:]
    assert loader.state_dict()["position"] == 4


def test_other_batch_size_warns_and_restarts_the_epoch():
    state = {"epoch": 0, "position": 2, "batch_size": 2, "num_replicas": 1, "length": 5}
    loader = _loader(batch_size=3)
    loader.load_state_dict(state)
    with pytest.warns(UserWarning, match="batch_size"):
        assert _epoch(loader, 0) == _epoch(_loader(), 0)
