"""Decoding cell images into RGB uint8 arrays with OpenCV.

One place decides how any supported file becomes pixels, so the scan, training, inference and the
GUI's thumbnails all see the same image. Files are only ever read, never written.

Before decoding, the image header is read (with Pillow, which parses headers lazily; OpenCV has no
header-only API) and an image over the pixel limit is refused: a 1 MB PNG can state 30000 x 30000
pixels and cost gigabytes to decode (a decompression bomb).
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
from typing import BinaryIO

import cv2
import numpy as np

from ..utils.logs import warn

log = logging.getLogger(__name__)

# A file OpenCV cannot decode is reported by the engine (a Problem naming the file and why); OpenCV's
# own "[ERROR:0@...] imdecode_ ..." lines on stderr would only repeat it without the file's name.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

IMAGE_EXTENSIONS = frozenset({".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff"})

# A file smaller than this cannot hold any real image; it is reported rather than decoded.
_MIN_BYTES = 16

# Images with more pixels than this are refused unread. 100 megapixels (10000 x 10000) is far beyond
# any single-cell image (C-NMC: 450 x 450) and still fits in memory (300 MB as RGB); a decompression
# bomb is usually much larger. ALLBLAST_MAX_PIXELS changes it (0: no limit).
DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "ALLBLAST_MAX_PIXELS"

# How the reasons for failures that lie outside the file begin: they may go away by themselves
# (permissions fixed, memory freed, the limit raised), so a scan must not keep them as a verdict.
NOT_READABLE = "not readable"
OUT_OF_MEMORY = "out of memory"
TOO_LARGE = "image too large"
UNEXPECTED = "could not be decoded"  # a decoder bug or crash: no verdict on the content either
_ENVIRONMENT_PREFIXES = (NOT_READABLE, OUT_OF_MEMORY, TOO_LARGE, UNEXPECTED)


class ImageReadError(ValueError):
    """A file that should be an image could not be turned into pixels; the message says why."""


def depends_on_environment(reason: str) -> bool:
    """True when a read failure's reason says nothing about the file's content (permission denied,
    I/O error, out of memory, over the pixel limit): the same file may read fine next time."""
    return reason.startswith(_ENVIRONMENT_PREFIXES)


def is_image_name(name: str) -> bool:
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS


def max_pixels_setting() -> int:
    """The pixel limit in force: ALLBLAST_MAX_PIXELS when set (0 = no limit), else the default."""
    return _parse_max_pixels(os.environ.get(MAX_PIXELS_ENV, "").strip())


@functools.lru_cache(maxsize=8)  # warns once per bad value, not once per file
def _parse_max_pixels(raw: str) -> int:
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw.replace("_", "")))  # "100e6" and "100_000_000" both read as meant
    except (ValueError, OverflowError):
        value = -1
    if value < 0:
        warn(f"{MAX_PIXELS_ENV}={raw!r} is not a number of pixels (0 = no limit); "
             f"using the default of {DEFAULT_MAX_PIXELS}")
        return DEFAULT_MAX_PIXELS
    return value


@functools.lru_cache(maxsize=1)
def _header_readers() -> dict:
    """sniff_format name -> Pillow's image class for that format. Constructing one parses only
    the header (size, mode), never the pixels. The classes are used directly rather than through
    `Image.open`, whose own bomb check would warn or raise with its own global limit."""
    from PIL.BmpImagePlugin import BmpImageFile
    from PIL.JpegImagePlugin import JpegImageFile
    from PIL.PngImagePlugin import PngImageFile
    from PIL.TiffImagePlugin import TiffImageFile

    return {"BMP": BmpImageFile, "PNG": PngImageFile, "JPEG": JpegImageFile, "TIFF": TiffImageFile}


def header_size(fh: BinaryIO) -> tuple[int, int] | None:
    """(width, height) as the header of the open file states it, or None when it cannot be told
    (not a known format, a damaged header: decoding then reports what is wrong). Leaves `fh` at 0."""
    try:
        reader = _header_readers().get(sniff_format(fh.read(16)) or "")
        if reader is None:
            return None
        fh.seek(0)
        with reader(fh) as im:  # a stream it did not open: closing the image leaves `fh` open
            return im.size
    except Exception as exc:  # noqa: BLE001 - any header Pillow cannot parse is OpenCV's to judge
        log.debug("no header size for %s: %s", getattr(fh, "name", "?"), exc)
        return None
    finally:
        fh.seek(0)


def check_pixels(fh: BinaryIO, max_pixels: int | None = None) -> None:
    """Raise ImageReadError when the header states more pixels than `max_pixels` (None: the
    configured limit; 0: no limit)."""
    limit = max_pixels_setting() if max_pixels is None else max_pixels
    if limit <= 0:
        return
    size = header_size(fh)
    if size is not None and size[0] * size[1] > limit:
        raise ImageReadError(f"{TOO_LARGE}: {size[0]} x {size[1]} pixels (limit {limit})")


def read_bytes(path: str | os.PathLike, *, max_pixels: int | None = None) -> bytes:
    """The file's bytes, after its header passed the pixel limit (see `check_pixels`): an image
    that is too large is refused before its body is read."""
    try:
        with open(path, "rb") as fh:
            check_pixels(fh, max_pixels)
            return fh.read()
    except PermissionError as exc:
        raise ImageReadError(f"{NOT_READABLE} (permission denied): {exc.filename}") from exc
    except MemoryError as exc:
        raise ImageReadError(f"{OUT_OF_MEMORY} while reading the file") from exc
    except OSError as exc:
        raise ImageReadError(f"{NOT_READABLE}: {exc.strerror or exc}") from exc


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """Any OpenCV-decoded array (gray, BGR, BGRA; 8/16-bit or float) -> contiguous RGB uint8."""
    if img.dtype == np.uint16:
        # 16-bit microscopy often uses only part of the range: stretch what is there.
        hi = int(img.max())
        img = (img.astype(np.float32) * (255.0 / hi) if hi > 0 else img.astype(np.float32))
        img = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        hi = float(img.max()) if img.size else 1.0
        scale = 255.0 if hi <= 1.0 else 255.0 / hi
        img = np.clip(img * scale + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)

    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    channels = img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if channels == 4:
        # Composite on black: C-NMC cells are segmented on a black background already.
        bgr = img[:, :, :3].astype(np.float32) * (img[:, :, 3:4].astype(np.float32) / 255.0)
        return cv2.cvtColor(np.clip(bgr + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_BGR2RGB)
    raise ImageReadError(f"unsupported number of channels: {channels}")


def decode_rgb(data: bytes, name: str = "") -> np.ndarray:
    """Decode encoded image bytes into an RGB uint8 array, or raise ImageReadError with a reason."""
    if len(data) == 0:
        raise ImageReadError("empty file (0 bytes)")
    if len(data) < _MIN_BYTES:
        raise ImageReadError(f"too small to be an image ({len(data)} bytes)")
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
        if img is None or img.size == 0:
            kind = sniff_format(data)
            if kind is None:
                raise ImageReadError("not an image (content is not a known image format)")
            raise ImageReadError(f"corrupt or truncated {kind} file")
        if _looks_truncated(data, img):
            raise ImageReadError(f"truncated {sniff_format(data)} file")
        return to_rgb8(img)
    except MemoryError as exc:  # numpy's allocations; says nothing about the file
        raise ImageReadError(f"{OUT_OF_MEMORY} while decoding") from exc
    except cv2.error as exc:
        if "Insufficient memory" in str(exc) or "Failed to allocate" in str(exc):
            raise ImageReadError(f"{OUT_OF_MEMORY} while decoding") from exc
        raise


def read_rgb(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Read one image file as RGB uint8 (H, W, 3). `max_pixels`: see `check_pixels`."""
    return decode_rgb(read_bytes(path, max_pixels=max_pixels), str(path))


def read_rgb_checked(path: str | os.PathLike, *, max_pixels: int | None = None) -> tuple[np.ndarray, str]:
    """Read and decode one file, also returning a content digest (for duplicate detection)."""
    data = read_bytes(path, max_pixels=max_pixels)
    return decode_rgb(data, str(path)), content_digest(data)


def content_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def sniff_format(data: bytes) -> str | None:
    head = data[:12]
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith(b"\x89PNG"):
        return "PNG"
    if head.startswith(b"\xff\xd8"):
        return "JPEG"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    return None


def _looks_truncated(data: bytes, img: np.ndarray) -> bool:
    """OpenCV fills missing pixel data with zeros instead of failing for some formats.

    BMP states its pixel-data offset and row layout in the header, so a short file is provable;
    JPEG must end with an EOI marker (trailing padding is tolerated).
    """
    kind = sniff_format(data)
    if kind == "BMP" and len(data) >= 34:
        offset = int.from_bytes(data[10:14], "little")
        width = int.from_bytes(data[18:22], "little", signed=True)
        height = abs(int.from_bytes(data[22:26], "little", signed=True))
        bpp = int.from_bytes(data[28:30], "little")
        compression = int.from_bytes(data[30:34], "little")
        if compression == 0 and bpp in (1, 4, 8, 16, 24, 32) and width > 0:
            row = ((abs(width) * bpp + 31) // 32) * 4
            return len(data) < offset + row * height
        return False
    if kind == "JPEG":
        return b"\xff\xd9" not in data[-1024:]
    return False
