"""Cached real-image features are reused, and recomputed when the extractor or the data change."""

import shutil

import numpy as np
import pytest

from msdm.metrics.realism.cache import FeatureCache, folder_fingerprint
from msdm.metrics.realism.evaluate import RealImageFolder, real_features
from msdm.metrics.realism.features import BiomedCLIPExtractor
from msdm.metrics.testing import write_tiny_biomedclip_transformers


@pytest.fixture(scope="module")
def extractors(tmp_path_factory):
    root = tmp_path_factory.mktemp("extractors")
    return (BiomedCLIPExtractor(write_tiny_biomedclip_transformers(root / "a", seed=0)),
            BiomedCLIPExtractor(write_tiny_biomedclip_transformers(root / "b", seed=1)))


@pytest.fixture
def real_dir(tmp_path, kvasir_dir):
    d = tmp_path / "real"
    d.mkdir()
    for src in sorted((kvasir_dir / "images").glob("*.jpg"))[:5]:
        shutil.copy(src, d / src.name)
    return d


def test_reused_and_invalidated(extractors, real_dir, tmp_path, kvasir_dir):
    ext_a, ext_b = extractors
    cache = tmp_path / "cache"
    calls = []

    def features(ext):
        src = RealImageFolder(real_dir)
        orig = src.iter_batches

        def counting(batch_size):  # count real extractions
            calls.append(1)
            return orig(batch_size)

        src.iter_batches = counting
        return real_features(src, ext, cache)

    first, hit = features(ext_a)
    assert not hit and len(calls) == 1 and len(first) == 5 * 2  # ids by stem and by file name
    again, hit = features(ext_a)
    assert hit and len(calls) == 1  # reused: nothing extracted
    for k in first:
        np.testing.assert_array_equal(first[k], again[k])

    _, hit = features(ext_b)  # other weights: other fingerprint
    assert not hit and len(calls) == 2

    victim = sorted(real_dir.glob("*.jpg"))[0]  # same name, other content
    shutil.copy(sorted((kvasir_dir / "images").glob("*.jpg"))[10], victim)
    changed, hit = features(ext_a)
    assert not hit and len(calls) == 3
    assert not np.allclose(changed[victim.stem], first[victim.stem])
    _, hit = features(ext_a)
    assert hit and len(calls) == 3

    shutil.copy(sorted((kvasir_dir / "images").glob("*.jpg"))[11], real_dir / "extra.jpg")  # a new image
    more, hit = features(ext_a)
    assert not hit and "extra" in more


def test_fingerprint_ignores_mtime_but_not_names(real_dir):
    import os

    fp = folder_fingerprint(real_dir)
    p = sorted(real_dir.glob("*.jpg"))[0]
    os.utime(p, (0, 0))
    assert folder_fingerprint(real_dir) == fp
    p.rename(real_dir / "renamed.jpg")
    assert folder_fingerprint(real_dir) != fp


def test_corrupt_or_foreign_entries_are_recomputed(extractors, tmp_path):
    ext = extractors[0]
    cache = FeatureCache(tmp_path)
    ids, feats = ["a", "b"], np.arange(2 * ext.feature_dim, dtype=np.float32).reshape(2, -1)
    assert cache.get_or_compute("data:1", ext, lambda: (ids, feats))[0] == ids and not cache.last_hit
    path = cache.path_for("data:1", ext)
    path.write_bytes(b"not a zip")
    got = cache.get_or_compute("data:1", ext, lambda: (ids, feats + 1))
    assert not cache.last_hit
    np.testing.assert_array_equal(got[1], feats + 1)
    assert cache.get_or_compute("data:1", ext, lambda: 1 / 0)[1][0, 0] == 1 and cache.last_hit
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporaries
