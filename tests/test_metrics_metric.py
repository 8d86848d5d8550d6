"""torchmetrics classes: equal to the array functions in one process, and with 2 DDP CPU processes (gloo) equal to
the single-process value."""

import atexit
import time

import numpy as np
import pytest
import torch

from msdm.metrics.realism.challenge import challenge_scores, fidelity_from_fid, real_features_by_prompt
from msdm.metrics.realism.frechet import feature_statistics, frechet_distance
from msdm.metrics.realism.metric import FBD, FID, FrechetDistance, PromptMetrics

D = 24


def make_data(seed=0, num_prompts=6, per_prompt=5):
    rng = np.random.default_rng(seed)
    gen = {p: (rng.normal(size=(per_prompt, D)) + (p // 2)).astype(np.float32) for p in range(1, num_prompts + 1)}
    real_ids = {f"r{j}": (rng.normal(size=D) * 1.3).astype(np.float32) for j in range(20)}
    mapping = {str(p): [f"r{(3 * p + k) % 20}" for k in range(3 + p % 3)] for p in range(1, num_prompts + 1)}
    real_all = rng.normal(size=(40, D)).astype(np.float32)
    return gen, real_ids, mapping, real_all


def flat(gen):
    feats = np.concatenate([gen[p] for p in sorted(gen)])
    pids = np.concatenate([[p] * len(gen[p]) for p in sorted(gen)])
    iids = np.concatenate([np.arange(len(gen[p])) for p in sorted(gen)])
    return feats, pids, iids


def test_frechet_metric_matches_arrays():
    gen, _, _, real_all = make_data()
    feats, _, _ = flat(gen)
    m = FrechetDistance(D)
    for chunk in np.array_split(feats, 4):
        m.update(torch.from_numpy(chunk))
    m.set_reference_stats(*feature_statistics(real_all))
    assert m.compute().item() == pytest.approx(frechet_distance(feats, real_all), rel=1e-9)
    # real side given as (synced) features instead of fixed statistics
    m2 = FrechetDistance(D)
    m2.update(torch.from_numpy(feats))
    m2.update(torch.from_numpy(real_all), real=True)
    assert m2.compute().item() == pytest.approx(frechet_distance(feats, real_all), rel=1e-9)
    assert FID().feature_dim == 2048 and FBD().feature_dim == 768
    m.reset()
    with pytest.raises(ValueError, match="at least 2"), pytest.warns(UserWarning, match="before the ``update``"):
        m.compute()


@pytest.mark.parametrize("reference_compatible", [False, True])
def test_prompt_metrics_match_challenge_scores(reference_compatible):
    gen, real_ids, mapping, _ = make_data(num_prompts=8)
    real_pp = real_features_by_prompt(real_ids, mapping, gen)
    expected = challenge_scores(gen, real_pp, reference_compatible=reference_compatible)
    m = PromptMetrics(reference_compatible=reference_compatible)
    m.set_real_features(real_pp)
    feats, pids, iids = flat(gen)
    order = np.random.default_rng(1).permutation(len(feats))  # arrival order must not matter
    for idx in np.array_split(order, 3):
        m.update(torch.from_numpy(feats[idx]), pids[idx], iids[idx])
    out = m.compute()
    for k, ek in (("fidelity", "fidelity"), ("agreement", "agreement"), ("diversity", "diversity"), ("fbd", "FBD")):
        assert out[k].item() == pytest.approx(expected[ek], rel=1e-9), k
    assert set(m.per_prompt) == set(gen) and m.per_prompt[2]["pair"] == 1


def test_prompt_metrics_without_pairs():
    gen, real_ids, mapping, _ = make_data()
    real_pp = real_features_by_prompt(real_ids, mapping, gen)
    m = PromptMetrics(pairs=None)
    m.set_real_features(real_pp)
    feats, pids, _ = flat(gen)
    m.update(torch.from_numpy(feats), pids)
    out = m.compute()
    assert "agreement" not in out
    fids = [frechet_distance(gen[p].astype(np.float64), real_pp[p]) for p in sorted(gen)]
    assert out["fidelity"].item() == pytest.approx(np.mean([fidelity_from_fid(f) for f in fids]), rel=1e-9)
    stacked = np.concatenate([real_pp[p] for p in sorted(gen)])
    assert out["fbd"].item() == pytest.approx(frechet_distance(feats, stacked), rel=1e-9)


# ---- DDP: 2 CPU processes with gloo ----


def _ddp_worker(rank, world_size, init_file, out_file, layout="uneven"):
    import torch.distributed as dist

    # A forked child must not enter the OpenMP pool the parent already used (libgomp is not fork-safe: it hangs)
    torch.set_num_threads(1)

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())  # gloo may abort at exit otherwise
    gen, real_ids, mapping, real_all = make_data()
    feats, pids, iids = flat(gen)
    fd = FrechetDistance(D)
    fd.set_reference_stats(*feature_statistics(real_all))
    pm = PromptMetrics()
    pm.set_real_features(real_features_by_prompt(real_ids, mapping, gen))
    if layout == "uneven":
        # uneven sharding: rank 0 gets prompts 1, 3, 4, 5; rank 1 gets 2 and 6, in reverse order, plus an empty update
        mine = np.isin(pids, [1, 3, 4, 5]) if rank == 0 else np.isin(pids, [6, 2])
        idx = np.flatnonzero(mine)[:: 1 if rank == 0 else -1]
        fd.update(torch.from_numpy(feats[idx]))
        pm.update(torch.from_numpy(feats[idx]), pids[idx], iids[idx])
        if rank == 1:
            fd.update(torch.zeros(0, D))
            pm.update(torch.zeros(0, D), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    elif rank == 0:  # "empty-rank": fewer prompts than ranks; rank 1 never calls update at all
        fd.update(torch.from_numpy(feats))
        pm.update(torch.from_numpy(feats), pids, iids)
    result = {"fd": fd.compute().item(), **{k: v.item() for k, v in pm.compute().items()}}  # every rank computes
    torch.save(result, f"{out_file}.{rank}")
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.ddp
@pytest.mark.parametrize("layout", ["uneven", "empty-rank"])
def test_ddp_two_processes_equal_single_process(tmp_path, layout):
    import torch.multiprocessing as mp

    # fork (CPU-only children, nothing CUDA) starts in a fraction of a second; spawn re-imports torch in each child
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "out"), layout), nprocs=2,
                             join=False, start_method=method)
    deadline = time.monotonic() + 300
    while not ctx.join(timeout=2):  # raises if a worker failed
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("DDP workers did not finish within 300 s")
    gen, real_ids, mapping, real_all = make_data()
    feats, pids, iids = flat(gen)
    fd = FrechetDistance(D)
    fd.set_reference_stats(*feature_statistics(real_all))
    fd.update(torch.from_numpy(feats))
    pm = PromptMetrics()
    pm.set_real_features(real_features_by_prompt(real_ids, mapping, gen))
    pm.update(torch.from_numpy(feats), pids, iids)
    single = {"fd": fd.compute().item(), **{k: v.item() for k, v in pm.compute().items()}}
    for rank in range(2):
        ddp = torch.load(tmp_path / f"out.{rank}", weights_only=True)
        assert ddp.keys() == single.keys()
        for k in single:
            assert ddp[k] == pytest.approx(single[k], rel=1e-10), (rank, k)
