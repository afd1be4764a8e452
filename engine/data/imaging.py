"""Decoding cell images into RGB uint8 arrays with OpenCV.

One place decides how any supported file becomes pixels, so the scan, training, inference and the
GUI's thumbnails all see the same image. Files are only ever read, never written.
"""
from __future__ import annotations

import hashlib
import os

import cv2
import numpy as np

IMAGE_EXTENSIONS = frozenset({".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff"})

# A file smaller than this cannot hold any real image; it is reported rather than decoded.
_MIN_BYTES = 16


class ImageReadError(ValueError):
    """A file that should be an image could not be turned into pixels; the message says why."""


def is_image_name(name: str) -> bool:
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS


def read_bytes(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except PermissionError as exc:
        raise ImageReadError(f"not readable (permission denied): {exc.filename}") from exc
    except OSError as exc:
        raise ImageReadError(f"not readable: {exc.strerror or exc}") from exc


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
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if img is None or img.size == 0:
        kind = sniff_format(data)
        if kind is None:
            raise ImageReadError("not an image (content is not a known image format)")
        raise ImageReadError(f"corrupt or truncated {kind} file")
    if _looks_truncated(data, img):
        raise ImageReadError(f"truncated {sniff_format(data)} file")
    return to_rgb8(img)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read one image file as RGB uint8 (H, W, 3)."""
    return decode_rgb(read_bytes(path), str(path))


def read_rgb_checked(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Read and decode one file, also returning a content digest (for duplicate detection)."""
    data = read_bytes(path)
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
