"""Facts of a real frame from its mask (count, size class, locations) against hand-built masks, and the facts table
of the shared Kvasir-SEG folders: deterministic, cached, atomic, clear errors."""

import numpy as np
import pytest
from PIL import Image

from msdm.errors import InputError
from msdm.facts.frames import MIN_AREA_FRACTION, FrameFacts, components, mask_facts, read_mask, size_class
from msdm.facts.table import COLUMNS, compute_facts, facts_table, facts_to_csv, list_frames


def disc(n, cx, cy, r):
    y, x = np.mgrid[0:n, 0:n]
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def test_mask_facts_of_hand_built_masks():
    n = 240
    # one small polyp in the upper-left cell (area pi*12^2 / 240^2 = 0.79 %: "< 5mm")
    f = mask_facts(disc(n, 40, 40, 12))
    assert (f.polyp_count, f.polyp_sizes, f.polyp_locations) == (1, ("< 5mm",), ("upper-left",))
    # two polyps: a large one in the centre (r 70: 26.7 % -> ">20mm", covering the 4 edge-adjacent cells by > 10 %)
    # and a 5-10 % one (r 35: 6.7 %) in the lower-right; a speck under MIN_AREA_FRACTION is not counted
    m = disc(n, 120, 120, 70) | disc(n, 205, 205, 33) | disc(n, 20, 220, 2)
    f = mask_facts(m)
    assert f.polyp_count == 2
    assert f.polyp_sizes == ("5-10mm", ">20mm")
    assert set(f.polyp_locations) == {"center", "upper-center", "lower-center", "center-left", "center-right",
                                      "lower-right"}
    assert f.polyp_locations[0] == "center"  # the prompts' order
    assert abs(f.area_fraction - (np.pi * 70**2 + disc(n, 205, 205, 33).sum()) / n**2) < 0.01
    assert mask_facts(np.zeros((n, n), bool)) == FrameFacts(0, (), 0.0, ())
    assert [size_class(a) for a in (0.01, 0.05, 0.099, 0.1, 0.2, 0.9)] == [
        "< 5mm", "5-10mm", "5-10mm", "11-20mm", ">20mm", ">20mm"]
    assert len(components(disc(n, 120, 120, 3))) == (1 if np.pi * 9 / n**2 >= MIN_AREA_FRACTION else 0)


def test_flipped_facts_mirror_the_locations_and_refuse_fixed_overlays():
    f = FrameFacts(1, (">20mm",), 0.3, ("center", "upper-left", "lower-center"), box=False, text=False)
    assert f.flipped(hflip=True).polyp_locations == ("center", "upper-right", "lower-center")
    assert f.flipped(vflip=True).polyp_locations == ("center", "lower-left", "upper-center")
    assert f.flipped(True, True).flipped(True, True) == f
    # the facts of a flipped mask are the flipped facts
    n = 240
    m = disc(n, 40, 40, 30) | disc(n, 120, 200, 20)
    g = mask_facts(m)
    assert mask_facts(m[:, ::-1]).polyp_locations == g.flipped(hflip=True).polyp_locations
    assert mask_facts(m[::-1]).polyp_locations == g.flipped(vflip=True).polyp_locations
    with pytest.raises(ValueError, match="must not be flipped"):
        FrameFacts(1, (), 0.1, ("center",), box=True, text=False).flipped(hflip=True)


def test_jpeg_masks_are_thresholded(tmp_path):
    m = disc(64, 32, 32, 16)
    Image.fromarray((m * 255).astype(np.uint8)).save(tmp_path / "m.jpg", quality=60)
    raw = np.asarray(Image.open(tmp_path / "m.jpg").convert("L"))
    assert len(np.unique(raw)) > 2  # JPEG noise: not binary
    back = read_mask(tmp_path / "m.jpg")
    assert back.dtype == bool and (back != m).mean() < 0.01
    assert mask_facts(back).polyp_count == 1


def test_facts_table_of_the_shared_folder(kvasir_dir, tmp_path):
    frames = list_frames(kvasir_dir)
    assert len(frames) == 150
    a = facts_table(kvasir_dir, cache_dir=tmp_path)
    cached = list(tmp_path.glob("*.csv"))
    assert len(cached) == 1 and cached[0].read_text().splitlines()[0] == ",".join(COLUMNS)
    b = facts_table(kvasir_dir, cache_dir=tmp_path)  # from the cache: equal
    assert a == b and len(a) == 150
    assert facts_to_csv(compute_facts(kvasir_dir)) == facts_to_csv(a)  # deterministic
    counts = [f.polyp_count for f in a.values()]
    assert min(counts) >= 1 and sum(c == 1 for c in counts) > 130  # every Kvasir-SEG frame shows a polyp
    assert all(f.polyp_locations and f.polyp_sizes for f in a.values())
    # every size class occurs (thresholds at the quartiles of the 698 shared polyps)
    assert {s for f in a.values() for s in f.polyp_sizes} == {"< 5mm", "5-10mm", "11-20mm", ">20mm"}


def test_folder_errors_are_clear(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(InputError, match="no masks/ folder"):
        list_frames(tmp_path)
    (tmp_path / "masks").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "a.jpg")
    with pytest.raises(InputError, match="no mask"):
        list_frames(tmp_path)
