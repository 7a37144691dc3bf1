"""Reference pictures: scikit-image's bundled photographs at stream resolution.

The fp16 accuracy check compares models on them at start-up; the demo, the tests
and the benchmarks build their synthetic streams from the same photographs.
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
