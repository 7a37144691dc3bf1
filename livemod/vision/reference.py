"""Reference pictures: scikit-image's bundled photographs at stream resolution.

The accuracy checks (fp16, and the CPU runtimes) compare models on them at start-up; the
demo, the tests and the benchmarks build their synthetic streams from the same photographs.
"""

from __future__ import annotations

import cv2
import numpy as np

from livemod.messages import Image

SIZE = (640, 360)
"""The stream resolution the reference frames are fitted to."""


def photo(name: str) -> Image:
    """A photograph bundled with scikit-image, as RGB uint8 (gray ones expanded)."""
    from skimage import data

    img = np.asarray(getattr(data, name)())
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[:, :, :3], dtype=np.uint8)


def fit(picture: Image, size: tuple[int, int] = SIZE) -> Image:
    return np.ascontiguousarray(cv2.resize(picture, size, interpolation=cv2.INTER_AREA))


def cartoon(image: Image) -> Image:
    """A drawn rendering of a photograph: flat colour areas with dark outlines."""
    small = cv2.resize(image, (image.shape[1] // 2 or 1, image.shape[0] // 2 or 1))
    for _ in range(4):
        small = cv2.bilateralFilter(small, 9, 60, 9)
    flat = cv2.resize(small, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    flat = (flat // 48) * 48 + 24
    gray = cv2.medianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 7)
    edges = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 4)
    return np.ascontiguousarray(np.where(edges[..., None] == 0, 20, flat).astype(np.uint8))
