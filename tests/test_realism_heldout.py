"""FID against held-out frames with its floor at the same n (msdm.metrics.realism.heldout)."""

import numpy as np
import pytest
import torch
from scipy import linalg

from msdm.metrics.realism.heldout import HeldOutRealism, clipped_shares, to_uint8


class MeanColour:
    """A tiny real extractor: the per-channel means of a 4 x 4 grid of blocks (48-d) of the uint8 images it gets."""

    def extract(self, images, batch_size=32):
        assert images.dtype == torch.uint8
        x = images.float() / 255
        return torch.nn.functional.avg_pool2d(x, x.shape[-1] // 4).flatten(1)


def _fid_reference(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_floor_and_fid_match_the_formula_and_order_sensibly():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(300, 3, 16, 16, generator=g) * 0.6 + 0.2
    held, reference = real[:100], real[100:]
    ext = MeanColour()
    m = HeldOutRealism(held, reference, extractor=ext, seed=3)
    draw = reference[torch.randperm(200, generator=torch.Generator().manual_seed(3))[:100]]
    assert m.floor == pytest.approx(_fid_reference(ext.extract(to_uint8(draw)), ext.extract(to_uint8(held))),
                                    rel=1e-6)
    same_kind = torch.rand(100, 3, 16, 16, generator=g) * 0.6 + 0.2
    blown = (same_kind * 3).clamp(0, 1)  # saturated: a third of the values clip at 1
    good, bad = m.score(same_kind), m.score(blown)
    assert good["ratio"] < bad["ratio"] and good["fid"] == pytest.approx(good["ratio"] * m.floor)
    assert good["clipped_255"] == 0 and bad["clipped_255"] > 0.3 and bad["real_clipped_255"] == 0
    with pytest.raises(ValueError, match="held-out n"):
        m.score(same_kind[:10])
    with pytest.raises(ValueError, match="at least as many"):
        HeldOutRealism(held, reference[:50], extractor=ext)


def test_clipped_shares_count_quantised_extremes():
    x = torch.tensor([0.0, 0.001, 0.5, 0.999, 1.0, 1.2, -0.1, 0.998]).view(1, 2, 2, 2)
    # 0.001 -> 0 and 0.999 -> 255 after rounding; 0.998 -> 254
    assert clipped_shares(x) == {"255": 3 / 8, "0": 3 / 8}
