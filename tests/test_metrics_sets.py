"""KernelDistance and ManifoldMetrics (torchmetrics classes over whole feature sets): equal to the array functions in
one process, and with 2 DDP CPU processes (gloo) equal to one process — whatever the sharding, also when a rank gets
no image at all."""

import atexit
import time

import numpy as np
import pytest
import torch

from msdm.metrics.realism.kid import kernel_inception_distance
from msdm.metrics.realism.prdc import manifold_scores
from msdm.metrics.realism.set_metrics import KernelDistance, ManifoldMetrics

D = 12


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(50, D)), rng.normal(size=(37, D)) * 1.2 + 0.3


def _metrics():
    return {"kid": KernelDistance(), "kid_subsets": KernelDistance(subsets=5, subset_size=20, seed=4),
            "prdc": ManifoldMetrics()}


def _values(ms):
    out = {}
    for name, m in ms.items():
        out.update({f"{name}/{k}": float(v) for k, v in m.compute().items()})
    return out


def test_metrics_equal_the_array_functions():
    real, fake = make_data()
    ms = _metrics()
    for m in ms.values():
        m.set_reference_features(real)
        for idx in np.array_split(np.arange(len(fake)), 3):
            m.update(torch.from_numpy(fake[idx]), index=torch.from_numpy(idx))
    v = _values(ms)
    k = kernel_inception_distance(real, fake)
    assert v["kid/kid"] == pytest.approx(k.value, abs=1e-12) and v["kid/kid_std"] == pytest.approx(k.std, abs=1e-12)
    assert v["kid/low"] < v["kid/kid"] < v["kid/high"]
    ks = kernel_inception_distance(real, fake, subsets=5, subset_size=20, seed=4)
    assert v["kid_subsets/kid"] == pytest.approx(ks.value, abs=1e-12)
    s = manifold_scores(real, fake)
    for key in ("precision", "recall", "density", "coverage"):
        assert v[f"prdc/{key}"] == pytest.approx(getattr(s, key), abs=1e-12)
        iv = ms["prdc"].intervals[key]
        assert iv["low"] <= getattr(s, key) <= iv["high"]
    # the real side given as features instead of a fixed reference
    m = KernelDistance()
    m.update(torch.from_numpy(fake))
    m.update(torch.from_numpy(real), real=True)
    assert float(m.compute()["kid"]) == pytest.approx(k.value, abs=1e-12)


def _ddp_worker(rank, world_size, init_file, out_file, layout):
    import torch.distributed as dist

    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP pool
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    real, fake = make_data()
    ms = _metrics()
    if layout == "uneven":  # rank 0: every third image; rank 1: the rest, reversed
        mine = np.arange(len(fake))
        mine = mine[mine % 3 == 0] if rank == 0 else mine[mine % 3 != 0][::-1]
    else:  # "empty-rank": rank 1 never calls update
        mine = np.arange(len(fake)) if rank == 0 else None
    for m in ms.values():
        m.set_reference_features(real)
        if mine is not None:
            m.update(torch.from_numpy(fake[mine]), index=torch.from_numpy(mine.copy()))
    torch.save(_values(ms), f"{out_file}.{rank}")
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.ddp
@pytest.mark.parametrize("layout", ["uneven", "empty-rank"])
def test_ddp_two_processes_equal_single_process(tmp_path, layout):
    import torch.multiprocessing as mp

    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "out"), layout), nprocs=2,
                             join=False, start_method=method)
    deadline = time.monotonic() + 300
    while not ctx.join(timeout=2):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("DDP workers did not finish within 300 s")
    real, fake = make_data()
    ms = _metrics()
    for m in ms.values():
        m.set_reference_features(real)
        m.update(torch.from_numpy(fake))
    single = _values(ms)
    for rank in range(2):
        ddp = torch.load(tmp_path / f"out.{rank}", weights_only=True)
        assert ddp.keys() == single.keys()
        for k in single:
            assert ddp[k] == pytest.approx(single[k], abs=1e-12), (rank, k)
