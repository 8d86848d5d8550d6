"""``ResumableDataLoader``: a ``DataLoader`` whose position inside an epoch survives a checkpoint.

A run stopped mid-epoch (``max_steps``, a checkpoint every N steps, preemption, ``kill -9``) must continue with the
batch it would have trained next. The order of an epoch is already a pure function of ``(seed, epoch)``
(:class:`~msdm.data.epoch_sampler.EpochShuffleSampler`, or ``DistributedSampler`` under DDP), so the position is all
that has to be saved: ``state_dict()`` returns ``{"epoch", "position", ...}`` (batches of that epoch handed out so
far) and ``load_state_dict()`` makes the next iteration of that epoch start at ``position`` by fast-forwarding the
*index* sampler — no image is loaded for the skipped batches.

Lightning treats any loader with ``state_dict`` / ``load_state_dict`` as resumable: it stores the state in the
checkpoint (``loops.fit_loop.state_dict.combined_loader``) and loads it into the new loader before the first
``iter()``, and it no longer warns that "your dataloader is not resumable". For a sized loader Lightning's training
fetcher does not prefetch, so the batches handed out are exactly the batches trained when a checkpoint is written.

Rules that keep this exact:

* The skip is bound when ``iter()`` is called (Lightning's own iterator is created first), and applied only if the
  sampler's epoch, read lazily at the first batch (after Lightning's ``set_epoch``), is the saved epoch; a
  checkpoint written at an epoch's last batch therefore resumes at the start of the next epoch.
* The index sampler is wrapped, not replaced: ``len(loader)`` stays the epoch's length, Lightning may still swap
  the sampler for a ``DistributedSampler(Wrapper)`` under DDP, and worker processes receive only indices past the
  skip.
* Resuming with another batch size or number of processes cannot continue the same sequence; a warning says so and
  the epoch restarts from its beginning (the pre-``ResumableDataLoader`` behaviour).

Pure torch (no Lightning import); usable with any training loop that saves ``state_dict()`` with its checkpoint.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator

from torch.utils.data import DataLoader

STATE_VERSION = 1


class _SkippingIndexSampler:
    """The loader's index sampler, fast-forwarded by the skip its loader requested for the iteration being built."""

    def __init__(self, loader: ResumableDataLoader, inner):
        self.loader, self.inner = loader, inner

    def __iter__(self):
        # read, not consumed: a worker iterator calls iter() twice while it is built (__init__, then _reset)
        skip = self.loader._skip_request
        it = iter(self.inner)
        return itertools.islice(it, skip, None) if skip else it

    def __len__(self) -> int:
        return len(self.inner)


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` with ``state_dict`` / ``load_state_dict`` (module docstring). Same arguments as ``DataLoader``."""

    def __init__(self, dataset, *args, **kwargs):
        super().__init__(dataset, *args, **kwargs)
        self._state = {"epoch": self._sampler_epoch(), "position": 0}  # of the iteration that last handed out a batch
        self._pending: dict | None = None  # loaded state, waiting for the next iter()
        self._skip_request = 0  # consumed by _SkippingIndexSampler while the iterator is being built

    @property
    def _index_sampler(self):
        return _SkippingIndexSampler(self, super()._index_sampler)

    def _sampler_epoch(self) -> int | None:
        epoch = getattr(self.sampler, "epoch", None)
        return None if epoch is None else int(epoch)

    def _layout(self) -> dict:
        return {"batch_size": self.batch_size, "num_replicas": int(getattr(self.sampler, "num_replicas", 1) or 1),
                "length": len(self)}

    # ------------------------------------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator:
        pending, self._pending = self._pending, None  # bound now: a later iter() (e.g. a cache pass) gets none
        return self._iterate(pending)

    def _iterate(self, pending: dict | None):
        # Runs at the first next(): after Lightning's set_epoch, so the epoch read here is the one being iterated.
        epoch = self._sampler_epoch()
        skip = self._resume_position(pending, epoch)
        self._skip_request = skip
        try:
            it = super().__iter__()
        finally:
            self._skip_request = 0
        position = skip
        for batch in it:
            position += 1
            self._state = {"epoch": epoch, "position": position}
            yield batch

    def _resume_position(self, pending: dict | None, epoch: int | None) -> int:
        if not pending:
            return 0
        if pending.get("epoch") is not None and epoch is not None and pending["epoch"] != epoch:
            return 0  # the saved epoch was complete (or another epoch runs now): start this one from its beginning
        position = int(pending.get("position", 0))
        if position <= 0 or position >= len(self):
            return 0
        layout = self._layout()
        changed = {k: (pending.get(k), v) for k, v in layout.items() if k != "length" and pending.get(k) not in (None, v)}
        if changed:
            warnings.warn(
                f"ResumableDataLoader: resumed with a different {', '.join(f'{k} ({a} -> {b})' for k, (a, b) in changed.items())}; "
                f"the interrupted epoch {epoch} restarts from its first batch (the same batches cannot continue).",
                stacklevel=3,
            )
            return 0
        return position

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """``{"version", "epoch", "position", "batch_size", "num_replicas", "length"}`` of the last iteration."""
        return {"version": STATE_VERSION, **self._state, **self._layout()}

    def load_state_dict(self, state: dict) -> None:
        """Make the next iteration of ``state["epoch"]`` start at batch ``state["position"]``."""
        if int(state.get("version", STATE_VERSION)) > STATE_VERSION:
            raise ValueError(f"loader state version {state['version']} is newer than this msdm ({STATE_VERSION})")
        self._pending = dict(state)
