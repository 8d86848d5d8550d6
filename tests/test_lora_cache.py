"""EmbeddingCache: per-(sample id, text) entries, fingerprints, atomic per-rank shards, lazy reads."""

import os

import pytest
import torch

from msdm.lora.embedding_cache import EmbeddingCache, fingerprint, module_fingerprint


def _fake_encoder(texts):
    # Deterministic "embedding" of a text: its bytes summed into a small vector (independent of the batch).
    return {"emb": torch.stack([torch.full((3, 2), float(sum(t.encode()))) + torch.arange(2.0) for t in texts]),
            "pooled": torch.stack([torch.tensor([float(len(t))]) for t in texts])}


def _compute(texts, calls):
    def compute(rows):
        calls.append(list(rows))
        return _fake_encoder([texts[j] for j in rows])
    return compute


def test_get_or_compute_only_computes_misses_and_keeps_batch_order(tmp_path):
    cache = EmbeddingCache(None, fingerprint(enc="fake"))
    ids, texts, calls = ["a", "b", "c"], ["x", "yy", "zzz"], []
    out = cache.get_or_compute(ids, texts, _compute(texts, calls))
    assert calls == [[0, 1, 2]]
    torch.testing.assert_close(out["emb"], _fake_encoder(texts)["emb"])
    ids2, texts2 = ["c", "d", "a"], ["zzz", "w", "x"]
    out2 = cache.get_or_compute(ids2, texts2, _compute(texts2, calls))
    assert calls[-1] == [1]  # only ("d", "w") was new
    torch.testing.assert_close(out2["emb"], _fake_encoder(texts2)["emb"])
    torch.testing.assert_close(out2["pooled"], _fake_encoder(texts2)["pooled"])
    assert (cache.hits, cache.misses) == (2, 4)


def test_same_id_with_another_caption_is_another_entry():
    cache = EmbeddingCache(None, "fp")
    cache.put("img1", "a polyp", {"e": torch.zeros(2)})
    cache.put("img1", "two polyps", {"e": torch.ones(2)})
    assert torch.equal(cache.get("img1", "a polyp")["e"], torch.zeros(2))
    assert torch.equal(cache.get("img1", "two polyps")["e"], torch.ones(2))
    assert cache.get("img2", "a polyp") is None and len(cache) == 2


def test_disk_shards_reload_without_recomputing_and_fingerprints_separate(tmp_path):
    texts = [f"caption {i}" for i in range(5)]
    ids = [f"id{i}" for i in range(5)]
    c0 = EmbeddingCache(tmp_path, "fpA", rank=0, flush_every=2, store_dtype=torch.bfloat16)
    c0.get_or_compute(ids, texts, _compute(texts, []))
    c0.flush()
    shards = sorted(p.name for p in (tmp_path / "fpA").iterdir() if p.suffix == ".safetensors")
    w = c0.writer
    assert shards == [f"shard-r000-w{w}-00000{i}.safetensors" for i in range(3)] and c0.written == shards
    # A leftover temporary file of an interrupted write is ignored.
    (tmp_path / "fpA" / ".shard-r000-000009.safetensors.tmp-1").write_bytes(b"garbage")

    calls = []
    c1 = EmbeddingCache(tmp_path, "fpA", rank=1)
    out = c1.get_or_compute(ids[::-1], texts[::-1], _compute(texts[::-1], calls))
    assert calls == [] and c1.hits == 5
    assert out["emb"].dtype == torch.bfloat16
    torch.testing.assert_close(out["emb"].float(), _fake_encoder(texts[::-1])["emb"].to(torch.bfloat16).float())
    # Rank 1 writes its own shard names, never rank 0's.
    c1.put("new", "text", {"emb": torch.zeros(3, 2), "pooled": torch.zeros(1)})
    assert c1.flush().name == f"shard-r001-w{c1.writer}-000000.safetensors"

    other = EmbeddingCache(tmp_path, "fpB")
    assert other.get("id0", "caption 0") is None and len(other) == 0


def test_keys_tolerate_any_id_and_text():
    cache = EmbeddingCache(None, "fp")
    weird = ("../x/y:z", "ünïcode / with slashes \x00 and nul")
    cache.put(*weird, {"t": torch.arange(3)})
    assert torch.equal(cache.get(*weird)["t"], torch.arange(3))
    with pytest.raises(ValueError):
        cache.put("a", "b", {"bad/name": torch.zeros(1)})


def test_module_fingerprint_sees_weights_not_only_config():
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 4)
    b = torch.nn.Linear(4, 4)
    assert module_fingerprint(a) != module_fingerprint(b)
    b.load_state_dict(a.state_dict())
    assert module_fingerprint(a) == module_fingerprint(b)
    assert fingerprint(x=1, y=[1, 2]) == fingerprint(y=[1, 2], x=1) != fingerprint(x=2, y=[1, 2])
    assert os.sep not in fingerprint(x=1)


def test_flush_by_bytes_bounds_pending_memory(tmp_path):
    cache = EmbeddingCache(tmp_path, "fp", flush_every=10_000, flush_bytes=3 * 4 * 100)
    for i in range(7):
        cache.put(f"id{i}", "", {"x": torch.zeros(100)})  # 400 bytes each: a shard every 3 entries
    assert len(list((tmp_path / "fp").glob("shard-*.safetensors"))) == 2 and len(cache) == 7
    assert torch.equal(EmbeddingCache(tmp_path, "fp").get("id4")["x"], torch.zeros(100))
