"""Robust image loading: every file either becomes a clean 8-bit RGB or L image, or fails with a message that names
the file, what is wrong with it, and how to fix it.

Conversions are explicit and documented (docs/data.md, "Bad input"):

* grayscale (``L``, ``1``, ``LA``) → replicated to 3 channels for RGB models, kept as one channel for ``mode="L"``;
* transparency (``RGBA``, ``LA``, ``P`` with a transparent index, ``PA``) → composited on **black**, the background
  of both endoscopy frames and radiology figures (a white matte would invent a bright border);
* 16-bit (``I;16*``, ``I`` with values ≤ 65535) → scaled by the **full 16-bit range** (``v / 257``), never min–max
  stretched per image (that would change intensities between images of the same study); 32-bit float ``F`` images
  are taken to be in [0, 1] and clipped;
* palette (``P``), ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` → converted by PIL;
* images smaller than ``min_size`` on their short side are rejected (``BadImageError`` kind ``too_small``):
  upsampling a thumbnail to the training resolution teaches the model blur.

Truncated files are **not** silently padded: ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` stays off, so a half-written
JPEG raises ``BadImageError`` kind ``truncated`` when it is decoded. The header check (:func:`probe_image`) also
reads the last bytes of a JPEG or PNG file for its end marker (JPEG ``FFD9``, PNG ``IEND``), so an interrupted copy is
found at setup without decoding; corrupt data *inside* a complete file is found only by decoding.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from msdm.errors import UserError

# What a bad image is; the DataModules count skipped samples by these kinds.
BAD_KINDS = ("missing", "corrupt", "truncated", "too_small", "unsupported")

_FIX = {
    "missing": "check the path / image column, or pass on_bad_sample='skip' to leave the sample out (it is counted)",
    "corrupt": "re-export or re-download the file, or pass on_bad_sample='skip' to leave it out (it is counted)",
    "truncated": "the file is cut short (interrupted copy or download): copy it again, or pass on_bad_sample='skip'",
    "too_small": "use a larger image, lower min_image_size, or pass on_bad_sample='skip'",
    "unsupported": "convert the file to PNG/JPEG (8- or 16-bit, gray or RGB), or pass on_bad_sample='skip'",
}


class BadImageError(UserError, ValueError):
    """An image that cannot be used. ``kind`` is one of :data:`BAD_KINDS`, ``name`` the file (or row) it came from."""

    def __init__(self, name: str, kind: str, detail: str):
        self.name, self.kind, self.detail = str(name), kind, detail
        super().__init__(f"Bad image {self.name!s}: {kind} ({detail}). Fix: {_FIX.get(kind, '')}")

    def __reduce__(self):  # survive the trip from a DataLoader worker to the main process
        return (BadImageError, (self.name, self.kind, self.detail))


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: enough to reject missing, unreadable and tiny images without decoding pixels."""

    width: int
    height: int
    mode: str
    format: str | None


def _describe(src: Any, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, dict):
        return str(src.get("path") or "<bytes>")
    return "<in-memory image>"


def _open(src: Any, name: str) -> Image.Image:
    """Open ``src`` lazily (header only). ``src``: path, bytes, a HF ``{"bytes", "path"}`` dict, or a PIL image."""
    if isinstance(src, Image.Image):
        return src
    if isinstance(src, dict):  # a `datasets.Image(decode=False)` cell
        if src.get("bytes"):
            src = src["bytes"]
        elif src.get("path"):
            src = src["path"]
        else:
            raise BadImageError(name, "missing", "the dataset cell holds neither bytes nor a path")
    try:
        if isinstance(src, (bytes, bytearray, memoryview)):
            if len(src) == 0:
                raise BadImageError(name, "corrupt", "0 bytes")
            return Image.open(io.BytesIO(src))
        # no stat() before opening: on network or overlay filesystems each one costs as much as a small decode
        return Image.open(src)
    except BadImageError:
        raise
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
        raise BadImageError(name, "missing", f"no file at {src}") from e
    except UnidentifiedImageError as e:
        empty = not isinstance(src, (bytes, bytearray, memoryview)) and _size_or_none(src) == 0
        raise BadImageError(name, "corrupt", "0 bytes" if empty else "not an image PIL can identify") from e
    except Image.DecompressionBombError as e:
        raise BadImageError(name, "unsupported", str(e)) from e
    except OSError as e:
        raise BadImageError(name, "corrupt", str(e)) from e


def _size_or_none(path) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


_TAIL = 4096  # bytes read from the end of a file for its end marker (JPEG may carry a little padding after it)


def _tail(src: Any) -> bytes | None:
    """The last bytes of an encoded image (path, bytes or HF cell); ``None`` for a decoded PIL image."""
    if isinstance(src, dict):
        src = src.get("bytes") or src.get("path")
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src[-_TAIL:])
    if isinstance(src, (str, os.PathLike)):
        try:
            with open(src, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - _TAIL))
                return f.read()
        except OSError:
            return None
    return None


def _check_end_marker(src: Any, fmt: str | None, name: str) -> None:
    """A JPEG without its end-of-image marker or a PNG without its IEND chunk was cut short (an interrupted copy)."""
    if fmt not in ("JPEG", "PNG"):
        return
    tail = _tail(src)
    if tail is None:
        return
    if fmt == "JPEG" and b"\xff\xd9" not in tail:
        raise BadImageError(name, "truncated", "no JPEG end-of-image marker: the file is cut short")
    if fmt == "PNG" and b"IEND" not in tail[-64:]:
        raise BadImageError(name, "truncated", "no PNG IEND chunk: the file is cut short")


def probe_image(src: Any, min_size: int = 0, name: str | None = None) -> ImageInfo:
    """Read the header and the end marker only (fast): raises :class:`BadImageError` for missing, unreadable, cut
    short (JPEG/PNG) or too small images."""
    name = _describe(src, name)
    img = _open(src, name)
    try:
        w, h = img.size
        info = ImageInfo(w, h, img.mode, img.format)
    finally:
        if not isinstance(src, Image.Image):
            img.close()
    _check_size(info.width, info.height, min_size, name)
    _check_end_marker(src, info.format, name)
    return info


def _check_size(w: int, h: int, min_size: int, name: str) -> None:
    if w <= 0 or h <= 0:
        raise BadImageError(name, "corrupt", f"size {w}x{h}")
    if min(w, h) < min_size:
        raise BadImageError(name, "too_small", f"{w}x{h} px, short side below min_image_size={min_size}")


def _to_8bit(img: Image.Image, name: str) -> Image.Image:
    """High bit depths → 8-bit L by a fixed scale (no per-image stretching)."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img, dtype=np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise BadImageError(name, "unsupported", f"mode {mode} with values outside 0..65535")
        return Image.fromarray(((a + 128) // 257).astype(np.uint8), mode="L")  # round(v * 255 / 65535)
    if mode == "F":
        a = np.asarray(img, dtype=np.float32)
        if not np.isfinite(a).all():
            raise BadImageError(name, "unsupported", "float image with NaN/inf pixels")
        return Image.fromarray((np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), mode="L")
    return img


def _flatten_alpha(img: Image.Image, mode: str) -> Image.Image:
    """Composite a transparent image on black and return it in ``mode`` (RGB or L)."""
    rgba = img.convert("RGBA")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, rgba).convert(mode)


def normalize_mode(img: Image.Image, mode: str = "RGB", name: str = "<image>") -> Image.Image:
    """Convert any PIL mode to ``mode`` ("RGB" or "L") with the documented rules above."""
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    if img.mode == mode:
        return img
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        return _flatten_alpha(img, mode)
    img = _to_8bit(img, name)
    if img.mode == mode:
        return img
    try:
        return img.convert(mode)  # L→RGB replicates; RGB→L uses ITU-R 601-2 luma; P/CMYK/YCbCr/1 handled by PIL
    except (ValueError, OSError) as e:
        raise BadImageError(name, "unsupported", f"cannot convert mode {img.mode} to {mode}: {e}") from e


def load_image(src: Any, mode: str = "RGB", min_size: int = 0, name: str | None = None) -> Image.Image:
    """Decode ``src`` fully and return an 8-bit ``mode`` image, or raise :class:`BadImageError`.

    ``src`` is a path, encoded bytes, a ``datasets.Image(decode=False)`` cell (``{"bytes", "path"}``) or a PIL image.
    """
    name = _describe(src, name)
    img = _open(src, name)
    _check_size(*img.size, min_size, name)
    try:
        img.load()
    except OSError as e:
        msg = str(e)
        low = msg.lower()
        kind = "truncated" if ("truncated" in low or "broken data stream" in low or "premature" in low) else "corrupt"
        raise BadImageError(name, kind, msg) from e
    except Image.DecompressionBombError as e:
        raise BadImageError(name, "unsupported", str(e)) from e
    except (SyntaxError, ValueError) as e:  # some decoders raise these on garbage
        raise BadImageError(name, "corrupt", str(e)) from e
    return normalize_mode(img, mode, name)
