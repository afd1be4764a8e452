"""Training augmentation beyond the dihedral views, for May-Grünwald-Giemsa smears, on uint8.

- `stain_jitter`: small hue shift and saturation / brightness scaling in HSV: the stain's
  colour varies between labs, batches and scanners, while its hue order (purple nucleus, pink
  cytoplasm) does not, so the hue moves only a few degrees.
- `soft_blur`: a small Gaussian blur, for focus differences between microscopes.
- `cell_crop`: a random-resized crop that always contains the image's central half, where the
  segmented (C-NMC) or centred (PBC, CellaVision) cell lies, so a crop never cuts the cell away.

Every function takes and returns an (H, W, 3) uint8 array and draws from the numpy Generator it is
given, so an item's augmentation depends only on the seed the sampler chose for it.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# At strength 1: hue +-4 degrees, saturation and brightness +-15%.
HUE_DEGREES, SAT_RANGE, VALUE_RANGE = 4.0, 0.15, 0.15
KEEP = 0.5  # the central fraction of each side that a crop always contains


@dataclass(frozen=True)
class Augment:
    color_jitter: float = 0.0
    blur_p: float = 0.0
    crop_scale: float = 1.0

    @property
    def active(self) -> bool:
        return self.color_jitter > 0 or self.blur_p > 0 or self.crop_scale < 1

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.crop_scale < 1:
            img = cell_crop(img, rng, self.crop_scale)
        if self.color_jitter > 0:
            img = stain_jitter(img, rng, self.color_jitter)
        if self.blur_p > 0 and rng.random() < self.blur_p:
            img = soft_blur(img, rng)
        return img


def stain_jitter(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2HSV)  # OpenCV hue: 0..179
    hue = rng.uniform(-1, 1) * HUE_DEGREES * strength / 2
    sat = 1 + rng.uniform(-1, 1) * SAT_RANGE * strength
    val = 1 + rng.uniform(-1, 1) * VALUE_RANGE * strength
    levels = np.arange(256, dtype=np.float32)
    # lookup tables: one pass per channel, results rounded and clipped back into uint8
    hue_lut = np.mod(np.round(levels + hue), 180).astype(np.uint8)
    sat_lut = np.clip(np.round(levels * sat), 0, 255).astype(np.uint8)
    val_lut = np.clip(np.round(levels * val), 0, 255).astype(np.uint8)
    h, s, v = cv2.split(hsv)
    hsv = cv2.merge((cv2.LUT(h, hue_lut), cv2.LUT(s, sat_lut), cv2.LUT(v, val_lut)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def soft_blur(img: np.ndarray, rng: np.random.Generator, max_sigma: float = 1.0) -> np.ndarray:
    sigma = rng.uniform(0.1, max_sigma)
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT_101)


def crop_box(size: tuple[int, int], rng: np.random.Generator, min_scale: float) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a crop of area [min_scale, 1] of the image, aspect ratio
    within 3/4..4/3, that contains the central KEEP of both sides."""
    H, W = size
    area = rng.uniform(min_scale, 1.0) * H * W
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    lo_h, lo_w = int(np.ceil(H * KEEP)), int(np.ceil(W * KEEP))
    h = int(np.clip(round(np.sqrt(area / ratio)), lo_h, H))
    w = int(np.clip(round(np.sqrt(area * ratio)), lo_w, W))
    c_top, c_bottom = (H - lo_h) // 2, (H - lo_h) // 2 + lo_h
    c_left, c_right = (W - lo_w) // 2, (W - lo_w) // 2 + lo_w
    top = int(rng.integers(max(0, c_bottom - h), min(H - h, c_top) + 1))
    left = int(rng.integers(max(0, c_right - w), min(W - w, c_left) + 1))
    return top, left, h, w


def cell_crop(img: np.ndarray, rng: np.random.Generator, min_scale: float) -> np.ndarray:
    H, W = img.shape[:2]
    top, left, h, w = crop_box((H, W), rng, min_scale)
    if (h, w) == (H, W):
        return img
    return cv2.resize(img[top:top + h, left:left + w], (W, H), interpolation=cv2.INTER_LINEAR)
