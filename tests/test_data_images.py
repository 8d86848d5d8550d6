"""Image loading and square transforms: every bad-input kind gives its error, every odd mode its documented conversion."""

import io
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from msdm.data.images import BadImageError, load_image, probe_image
from msdm.data.transforms import SquareTransform, crop_box, to_square, to_tensor


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def polyp_jpg(kvasir_dir):
    return sorted((kvasir_dir / "images").glob("*.jpg"))[0]


def test_real_image_loads_as_rgb_and_gray(polyp_jpg):
    rgb = load_image(polyp_jpg)
    assert rgb.mode == "RGB" and rgb.size == (256, 256)
    gray = load_image(polyp_jpg, mode="L")
    assert gray.mode == "L" and gray.size == (256, 256)


def test_grayscale_is_replicated_to_three_channels(roco_dir):
    import csv

    rows = list(csv.DictReader(open(roco_dir / "captions.csv")))
    gray_file = next(r["file"] for r in rows if r["mode"] == "L")
    src = roco_dir / "images" / gray_file
    assert Image.open(src).mode == "L"
    a = np.asarray(load_image(src, mode="RGB"))
    assert a.shape[2] == 3 and (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
    assert (a[..., 0] == np.asarray(Image.open(src))).all()  # values unchanged


def test_rgba_is_composited_on_black():
    a = np.zeros((40, 40, 4), np.uint8)
    a[..., 0] = 200  # red everywhere
    a[:20, :, 3] = 255  # top half opaque, bottom half transparent
    out = np.asarray(load_image(_png(Image.fromarray(a, "RGBA"))))
    assert (out[:20, :, 0] == 200).all() and (out[20:] == 0).all()


def test_palette_with_and_without_transparency(polyp_jpg):
    p = Image.open(polyp_jpg).convert("P")
    out = load_image(_png(p))
    assert out.mode == "RGB" and out.size == (256, 256)
    q = Image.new("P", (40, 40), 1)
    q.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    q.info["transparency"] = 1  # the only colour used is transparent → black
    assert np.asarray(load_image(_png(q, transparency=1))).max() == 0


def test_16bit_is_scaled_by_the_full_range_not_stretched():
    a = np.array([[0, 257, 32896, 65535]], np.uint16).repeat(40, 0).repeat(10, 1)
    out = np.asarray(load_image(_png(Image.fromarray(a)), mode="L"))
    assert list(out[0, ::10]) == [0, 1, 128, 255]
    dark = np.full((40, 40), 1000, np.uint16)  # a 16-bit image that uses little of its range stays dark
    assert np.asarray(load_image(_png(Image.fromarray(dark)), mode="RGB")).max() == 4


def test_float_and_cmyk_modes(tmp_path, polyp_jpg):
    f = Image.fromarray(np.linspace(-0.5, 1.5, 64 * 64, dtype=np.float32).reshape(64, 64), "F")
    f.save(tmp_path / "f.tif")
    a = np.asarray(load_image(tmp_path / "f.tif", mode="L"))
    assert a.min() == 0 and a.max() == 255
    Image.open(polyp_jpg).convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert load_image(tmp_path / "cmyk.jpg").mode == "RGB"


def test_missing_file_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(BadImageError) as e:
        load_image(tmp_path / "nope.jpg")
    assert e.value.kind == "missing" and "nope.jpg" in str(e.value) and "Fix:" in str(e.value)


@pytest.mark.parametrize("content", [b"", b"not an image at all" * 10, b"\xff\xd8\xff" + b"\x00" * 50])
def test_corrupt_files(tmp_path, content):
    p = tmp_path / "bad.jpg"
    p.write_bytes(content)
    with pytest.raises(BadImageError) as e:
        load_image(p)
    assert e.value.kind in ("corrupt", "truncated") and "bad.jpg" in str(e.value)


def corrupt_scan(data: bytes, seed: int = 0) -> bytes:
    """A complete JPEG (header and end marker intact) whose entropy-coded data is damaged."""
    rng = np.random.default_rng(seed)
    arr = bytearray(data)
    for k in range(200):
        i = int(rng.integers(len(data) // 3, len(data) - 100))
        arr[i] = 0xFF if k % 2 else arr[i] ^ 0x5A
    return bytes(arr)


def test_truncated_jpeg_and_png_fail_the_header_check(tmp_path, polyp_jpg):
    data = polyp_jpg.read_bytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    for check in (probe_image, load_image):  # the end marker is missing: found without decoding, and by decoding
        with pytest.raises(BadImageError) as e:
            check(p)
        assert e.value.kind == "truncated" and "cut.jpg" in str(e.value)
    png = _png(Image.open(polyp_jpg))
    with pytest.raises(BadImageError, match="IEND") as e:
        probe_image(png[: len(png) - 30], name="cut.png")
    assert e.value.kind == "truncated"
    assert probe_image(data).width == 256 and probe_image(png).width == 256  # complete files pass


def test_corrupt_scan_data_is_found_by_decoding_only(polyp_jpg):
    bad = corrupt_scan(polyp_jpg.read_bytes())
    assert probe_image(bad).width == 256  # header and end marker are intact ...
    with pytest.raises(BadImageError) as e:  # ... the pixels are not
        load_image(bad, name="scan.jpg")
    assert e.value.kind in ("truncated", "corrupt") and "scan.jpg" in str(e.value)


def test_tiny_images_are_rejected_by_min_size():
    tiny = _png(Image.new("RGB", (12, 40)))
    assert load_image(tiny, min_size=8).size == (12, 40)
    with pytest.raises(BadImageError) as e:
        load_image(tiny, min_size=32)
    assert e.value.kind == "too_small"
    with pytest.raises(BadImageError):
        probe_image(tiny, min_size=32)


def test_bad_image_error_survives_pickling():  # raised in a DataLoader worker, re-raised in the main process
    e = pickle.loads(pickle.dumps(BadImageError("x.jpg", "corrupt", "detail")))
    assert (e.name, e.kind) == ("x.jpg", "corrupt") and "x.jpg" in str(e)


# --- transforms --------------------------------------------------------------------------------------------------


def test_to_tensor_range():
    a = np.array([[0, 255]], np.uint8).repeat(2, 0)
    t = to_tensor(Image.fromarray(a).convert("RGB"))
    assert t.shape == (3, 2, 2) and t.min() == -1 and t.max() == 1


def test_crop_box_offsets():
    assert crop_box(300, 200) == (50, 0, 250, 200)
    assert crop_box(300, 200, 0.0) == (0, 0, 200, 200)
    assert crop_box(300, 200, 1.0) == (100, 0, 300, 200)
    assert crop_box(200, 300, 0.5) == (0, 50, 200, 250)


def test_aspect_modes_on_a_real_non_square_image(shared_data):
    src = sorted((shared_data / "kvasir-seg-original" / "images").glob("*.jpg"))[0]
    img = load_image(src)
    w, h = img.size
    assert w != h
    for aspect in ("crop", "pad", "squash"):
        t = SquareTransform(64, aspect)(img)
        assert t.shape == (3, 64, 64) and t.dtype == torch.float32 and -1 <= t.min() and t.max() <= 1
    # crop = centre square of the original, resized (PIL's resize(box=) also reads the pixels just outside the box
    # at the border, hence a tolerance on the mean, not per pixel)
    s = min(w, h)
    ref = to_tensor(img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((64, 64), Image.BILINEAR))
    assert (SquareTransform(64, "crop")(img) - ref).abs().mean() < 1 / 127.5


def test_pad_letterboxes_on_black():
    wide = Image.new("RGB", (200, 100), (255, 255, 255))
    out = np.asarray(to_square(wide, 64, "pad"))
    assert (out[:15] == 0).all() and (out[-15:] == 0).all() and (out[20:44] == 255).all()
    tall = Image.new("L", (50, 100), 255)
    out = np.asarray(to_square(tall, 64, "pad"))
    assert out.shape == (64, 64) and (out[:, :14] == 0).all() and (out[:, 20:44] == 255).all()


def test_flips_in_the_transform():
    a = np.zeros((8, 8), np.uint8)
    a[0, 0] = 255
    img = Image.fromarray(a).convert("RGB")
    tr = SquareTransform(8)
    assert tr(img)[0, 0, 0] == 1 and tr(img, hflip=True)[0, 0, 7] == 1 and tr(img, vflip=True)[0, 7, 0] == 1
