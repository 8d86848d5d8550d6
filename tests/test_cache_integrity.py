"""The training cache stays true when several processes touch it: unique shard names per writer (two fills of one
rank never overwrite each other), one filler per rank and folder (a lock), a completion marker written after the
shards it lists and checked against them, and a cache_on_miss='error' message that points at the right fix."""

import pytest
import torch
from torch.utils.data import DataLoader

from msdm.cache.frozen_outputs import fill_training_cache
from msdm.cache.training import TrainingCache
from msdm.errors import InputError
from msdm.lora.embedding_cache import EmbeddingCache


def _encode_posterior(px):  # a fixed, deterministic "encoder": what is stored is what it returns
    return {"mean": px[:, :2, ::2, ::2] * 0.5, "std": px[:, :2, ::2, ::2].abs() + 0.1}


def _encode_text(captions):
    states = torch.stack([torch.full((4, 3), float(len(c))) for c in captions])
    return {"states": states, "mask": torch.ones(len(captions), 4, dtype=torch.long)}


def _loader(n=6):
    samples = [{"pixel_values": torch.full((3, 8, 8), i / 10), "caption": f"caption {i % 3}", "id": f"img{i}"}
               for i in range(n)]
    return DataLoader(samples, batch_size=2, shuffle=False)


def _cache(root, rank=0):
    return TrainingCache(root, "lat", "txt", rank=rank)


def test_two_writers_of_one_rank_never_overwrite_each_other(tmp_path):
    a, b = EmbeddingCache(tmp_path, "fp", rank=0), EmbeddingCache(tmp_path, "fp", rank=0)
    a.put("x", "", {"t": torch.zeros(2)})
    b.put("y", "", {"t": torch.ones(2)})
    pa, pb = a.flush(), b.flush()
    assert pa != pb and pa.name.startswith("shard-r000-w") and pa.exists() and pb.exists()
    fresh = EmbeddingCache(tmp_path, "fp")
    assert torch.equal(fresh.get("x")["t"], torch.zeros(2)) and torch.equal(fresh.get("y")["t"], torch.ones(2))


def test_a_second_filler_of_the_same_rank_is_refused(tmp_path):
    first, second = _cache(tmp_path), _cache(tmp_path)
    with first.fill_lock():
        with pytest.raises(InputError, match=r"is being filled by pid \d+"):
            fill_training_cache(second, {"train": _loader()}, _encode_posterior, _encode_text)
        other_rank = _cache(tmp_path, rank=1)
        with other_rank.fill_lock():  # another rank fills its own share next to it
            pass
    stats = fill_training_cache(second, {"train": _loader()}, _encode_posterior, _encode_text)
    assert stats["train"]["complete"] and stats["train"]["latents"] == 6


def test_the_marker_lists_its_shards_and_a_marker_without_them_does_not_count(tmp_path):
    cache = _cache(tmp_path)
    fill_training_cache(cache, {"train": _loader()}, _encode_posterior, _encode_text)
    assert cache.is_filled("train", 6)
    marker = next(cache.latents.directory.glob("filled-train-*.json"))
    import json

    record = json.loads(marker.read_text())
    assert record["latent_shards"] and record["text_shards"]
    assert marker.stat().st_mtime >= max((cache.latents.directory / n).stat().st_mtime for n in record["latent_shards"])
    # the shards the marker vouches for disappear (a clobbering writer, a cleanup): the split is not filled ...
    for name in record["latent_shards"]:
        (cache.latents.directory / name).unlink()
    again = _cache(tmp_path)
    assert not again.is_filled("train", 6)
    # ... and the next fill (msdm cache) really fills it again instead of doing nothing
    stats = fill_training_cache(again, {"train": _loader()}, _encode_posterior, _encode_text)
    assert stats["train"]["latents"] == 6 and stats["train"]["complete"]
    check = _cache(tmp_path)
    assert check.is_filled("train", 6) and not check.missing_latents([f"img{i}" for i in range(6)], "train", 0)
    mean, _ = check.latent_posterior(["img3"], "train", 0)
    torch.testing.assert_close(mean[0], _encode_posterior(torch.full((1, 3, 8, 8), 0.3))["mean"][0])


def test_cache_on_miss_error_names_the_folder_and_the_right_fix(tmp_path):
    cache = _cache(tmp_path)
    fill_training_cache(cache, {"train": _loader()}, _encode_posterior, _encode_text)
    with pytest.raises(KeyError) as e:
        cache.latent_posterior(["unseen"], "train", 0)
    msg = str(e.value)
    assert str(cache.latents.directory) in msg and "msdm cache -c CONFIG -- <the same" in msg
    assert "prints the folder it fills" in msg and "cache_on_miss='encode'" in msg
