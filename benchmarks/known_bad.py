"""Known-bad matching as streams show a listed picture: robustness, false matches, cost.

Setting: a corpus of real photographs that ship in installed packages (scikit-image's
data, matplotlib's and scikit-learn's sample images). Half of them (even positions)
are the known-bad list; each is shown in 640x360 frames under every transform below,
and both matchers look at the same frames in the same run:

* ``phash``: the old matcher, 64-bit DCT pHash of the whole frame, 8 bits of 64;
* ``pdq``: ``KnownBadAnalyzer``, PDQ over candidate boxes (frame, content area,
  insets) and dihedral variants, 31 bits of 256.

A transform is matched when the best signal names the right picture. False matches:
the other half of the corpus under the same transforms, plus benign frames (moving
test pattern, flat frames, noise, the photos as inset backgrounds, and the detection
corpus of ``livemod.testing.corpus`` fitted, stretched and filmed by a panning,
zooming camera), against the list.

Cost, per sample, at 1k, 100k and 1M list entries (random PDQ hashes besides the
listed pictures), each against a baseline measured in the same run, call after call:
the whole analyzer against itself without the listed pictures' views and the caption
cuts (the matcher before them); the search alone (multi-index hashing, over the
sample's own queries) against brute force over the same entries, with a check that
both find the same entries; and the old pHash analyzer.

    .venv/bin/python benchmarks/known_bad.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import cv2
import numpy as np
from av.video.stream import VideoStream

from livemod.messages import Image
from livemod.testing.corpus import benign_pictures, camera
from livemod.testing.media import pattern
from livemod.vision.hashes import HashAnalyzer, KnownBadIndex
from livemod.vision.hashlists import HashList, ListSpec
from livemod.vision.index import HashIndex
from livemod.vision.known_bad import KnownBadAnalyzer, KnownBadLists

W, H = 640, 360
SKIMAGE = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass",
    "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina",
    "rocket", "text",
)  # fmt: skip
SIZES = (1_000, 100_000, 1_000_000)


def corpus() -> dict[str, Image]:
    """The photographs, RGB uint8, keyed by name (package photos only, none downloaded)."""
    from skimage import data

    out: dict[str, Image] = {}
    for name in SKIMAGE:
        img = np.asarray(getattr(data, name)())
        out[name] = _rgb(img)
    extra = {
        "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
        "china": ("sklearn", "datasets/images/china.jpg"),
        "flower": ("sklearn", "datasets/images/flower.jpg"),
    }
    for name, (package, rel) in extra.items():
        try:
            mod = __import__(package)
        except ImportError:
            continue
        path = Path(cast(str, mod.__file__)).parent / rel
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is not None:
            out[name] = _rgb(img[:, :, ::-1])
    return out


def _rgb(img: np.ndarray) -> Image:
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[:, :, :3], dtype=np.uint8)


# -- how a stream shows a picture ------------------------------------------------------


def place(pic: Image, scale: float = 1.0, bars: int = 0, bg: Image | None = None) -> Image:
    """``pic`` fitted into the frame (aspect kept), at ``scale`` of the fit, centred."""
    s = min(W / pic.shape[1], H / pic.shape[0]) * scale
    pw, ph = max(8, round(pic.shape[1] * s)), max(8, round(pic.shape[0] * s))
    frame = np.full((H, W, 3), bars, np.uint8) if bg is None else bg.copy()
    x, y = (W - pw) // 2, (H - ph) // 2
    frame[y : y + ph, x : x + pw] = cv2.resize(pic, (pw, ph), interpolation=cv2.INTER_AREA)
    return frame


def inset(pic: Image, bg: Image, width: float, corner: str) -> Image:
    pw = round(W * width)
    ph = min(H - 16, round(pw * pic.shape[0] / pic.shape[1]))
    frame = bg.copy()
    x = 12 if "l" in corner else W - pw - 12
    y = 12 if "t" in corner else H - ph - 12
    frame[y : y + ph, x : x + pw] = cv2.resize(pic, (pw, ph), interpolation=cv2.INTER_AREA)
    return frame


def crop(pic: Image, frac: float) -> Image:
    h, w = pic.shape[:2]
    dx, dy = round(w * frac / 2), round(h * frac / 2)
    return np.ascontiguousarray(pic[dy : h - dy, dx : w - dx])


def jpeg(img: Image, quality: int) -> Image:
    _, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])


def caption(img: Image, band: bool) -> Image:
    out = img.copy()
    if band:
        out[H - H // 10 :] = (out[H - H // 10 :] * 0.4 + 10).astype(np.uint8)
    cv2.putText(out, "LIVE  follow me for more", (24, H - 12), 0, 0.8, (255, 255, 255), 2)
    return out


def h264(frames: Sequence[Image], crf: int) -> list[Image]:
    """Each frame through libx264 at ``crf`` (one 3-frame GOP per picture), decoded back."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.mp4"
        with av.open(str(path), "w") as f:
            s = cast(VideoStream, f.add_stream("libx264", rate=25))
            s.width, s.height, s.pix_fmt = W, H, "yuv420p"
            s.time_base = Fraction(1, 25)
            s.options = {"crf": str(crf), "preset": "veryfast", "g": "3"}
            i = 0
            for img in frames:
                for _ in range(3):  # the third copy is a P-frame, as most of a stream is
                    vf = av.VideoFrame.from_ndarray(img, format="rgb24")
                    vf.pts = i
                    i += 1
                    f.mux(s.encode(vf))
            f.mux(s.encode(None))
        with av.open(str(path)) as f:
            decoded = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    return [np.ascontiguousarray(decoded[3 * k + 2]) for k in range(len(frames))]


def transforms(bg: Image, quick: bool) -> dict[str, Callable[[Image], Image]]:
    t: dict[str, Callable[[Image], Image]] = {
        "stretched_full_frame": lambda p: cv2.resize(p, (W, H), interpolation=cv2.INTER_AREA),
        "fit_black_bars": lambda p: place(p),
        "fit_grey_bars": lambda p: place(p, bars=48),
        "letterbox_wide_frame": lambda p: place(p[: p.shape[0] // 2 * 2]),
        "scale_70": lambda p: place(p, 0.7),
        "scale_50": lambda p: place(p, 0.5),
        "scale_30": lambda p: place(p, 0.3),
        "crop_5": lambda p: place(crop(p, 0.05)),
        "crop_10": lambda p: place(crop(p, 0.10)),
        "crop_20": lambda p: place(crop(p, 0.20)),
        "mirror": lambda p: place(np.ascontiguousarray(p[:, ::-1])),
        "rotate90": lambda p: place(np.ascontiguousarray(np.rot90(p, -1))),
        "rotate180": lambda p: place(np.ascontiguousarray(np.rot90(p, 2))),
        "caption_text": lambda p: caption(place(p), band=False),
        "caption_bar": lambda p: caption(place(p), band=True),
        "jpeg_q20": lambda p: jpeg(place(p), 20),
        "jpeg_q10": lambda p: jpeg(place(p), 10),
        "blur": lambda p: cv2.GaussianBlur(place(p), (7, 7), 2.0),
    }
    for width in (0.6, 0.4, 0.3, 0.25):
        for corner in ("tl", "br") if quick else ("tl", "tr", "bl", "br"):
            t[f"inset_{round(width * 100)}_{corner}"] = lambda p, w=width, c=corner: inset(
                p, bg, w, c
            )
    if quick:
        keep = ("fit_black_bars", "mirror", "caption_text", "caption_bar", "crop_10", "jpeg_q20",
                "inset_40_tl")  # fmt: skip
        t = {k: v for k, v in t.items() if k in keep}
    return t


# -- matching --------------------------------------------------------------------------


def matched_label(result: Any) -> str | None:
    for signal in result.signals:
        if signal.category == "known_bad":
            return str(signal.label).split(":", 1)[-1]
    return None


def robustness(
    listed: dict[str, Image],
    others: dict[str, Image],
    new: KnownBadAnalyzer,
    old: HashAnalyzer,
    bg: Image,
    quick: bool,
    boxes_only: KnownBadAnalyzer,
) -> dict[str, Any]:
    table: dict[str, Any] = {}
    false = {"pdq": 0, "phash": 0, "frames": 0}
    for tname, fn in transforms(bg, quick).items():
        hits = {"pdq": 0, "phash": 0, "boxes": 0}
        for name, pic in listed.items():
            frame = fn(pic)
            if matched_label(new.analyze_batch([frame])[0]) == f"{name}.png":
                hits["pdq"] += 1
            if tname.startswith("inset"):
                found = matched_label(boxes_only.analyze_batch([frame])[0])
                hits["boxes"] += found == f"{name}.png"
            if matched_label(old.analyze_batch([frame])[0]) == f"{name}.png":
                hits["phash"] += 1
        for pic in others.values():
            frame = fn(pic)
            false["frames"] += 1
            false["pdq"] += matched_label(new.analyze_batch([frame])[0]) is not None
            false["phash"] += matched_label(old.analyze_batch([frame])[0]) is not None
        n = len(listed)
        table[tname] = {
            "pictures": n,
            "pdq_match_rate": round(hits["pdq"] / n, 3),
            "phash_match_rate": round(hits["phash"] / n, 3),
        }
        if tname.startswith("inset"):
            table[tname]["pdq_without_features_match_rate"] = round(hits["boxes"] / n, 3)
    crfs = (38,) if quick else (32, 38, 44)
    for crf in crfs:
        frames = h264([place(p) for p in listed.values()], crf)
        hits = {"pdq": 0, "phash": 0}
        for name, frame in zip(listed, frames, strict=True):
            hits["pdq"] += matched_label(new.analyze_batch([frame])[0]) == f"{name}.png"
            hits["phash"] += matched_label(old.analyze_batch([frame])[0]) == f"{name}.png"
        table[f"h264_crf{crf}"] = {
            "pictures": len(listed),
            "pdq_match_rate": round(hits["pdq"] / len(listed), 3),
            "phash_match_rate": round(hits["phash"] / len(listed), 3),
        }
    return {"per_transform": table, "other_photos": false}


def benign(
    new: KnownBadAnalyzer,
    old: HashAnalyzer,
    others: dict[str, Image],
    listed: Sequence[str],
    quick: bool,
) -> dict[str, Any]:
    """Frames that show no listed picture: test patterns, flat frames, noise, the other
    photographs, and the detection corpus (``livemod.testing.corpus``: photographs,
    video frames, drawings, cartoons; fitted, stretched, and a camera panning and
    zooming over them), less the listed pictures and their cartoons."""
    rng = np.random.default_rng(5)
    frames = [pattern(t / 4) for t in range(40)]
    frames += [np.full((H, W, 3), v, np.uint8) for v in (0, 16, 128, 235)]
    frames += [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(4)]
    frames += [cv2.resize(p, (W, H), interpolation=cv2.INTER_AREA) for p in others.values()]
    same = {"cat": "chelsea"}  # scikit-image ships one photograph under both names
    pictures = [
        p
        for p in benign_pictures()
        if (name := p.name.split("#")[0].removeprefix("cartoon:")) not in listed
        and same.get(name) not in listed
    ]
    for p in pictures[:8] if quick else pictures:
        frames += [place(p.image), cv2.resize(p.image, (W, H), interpolation=cv2.INTER_AREA)]
    seconds = 10.0 if quick else 120.0
    frames += [f for _, _, f in camera(pictures, seconds, 2.0, seed=3, size=(W, H))]
    pdq_false = sum(matched_label(r) is not None for r in new.analyze_batch(frames))
    phash_false = sum(matched_label(r) is not None for r in old.analyze_batch(frames))
    return {
        "frames": len(frames),
        "corpus_pictures": len(pictures),
        "pdq_false_matches": pdq_false,
        "phash_false_matches": phash_false,
    }


# -- cost ------------------------------------------------------------------------------


def pct(values_ms: Sequence[float]) -> dict[str, float | int]:
    v = np.asarray(values_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(v, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3),
            "n": len(v)}  # fmt: skip


def timed(fn: Callable[[], object], n: int) -> list[float]:
    fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


Timings = dict[str, list[float]]


def timed_pair(a: Callable[[], object], b: Callable[[], object], n: int) -> tuple[Timings, Timings]:
    """Both timed in turn, call after call, so that other load on the machine falls on
    each alike: wall and CPU milliseconds (the CPU time of a single-threaded call is
    what other processes on the cores stretch least)."""
    out: tuple[Timings, Timings] = ({"wall": [], "cpu": []}, {"wall": [], "cpu": []})
    a()
    b()
    for _ in range(n):
        for fn, t in zip((a, b), out, strict=True):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            t["cpu"].append((time.process_time() - c0) * 1000)
            t["wall"].append((time.perf_counter() - w0) * 1000)
    return out


def features_cost(
    every: KnownBadAnalyzer,
    every2: KnownBadAnalyzer,
    boxes_only: KnownBadAnalyzer,
    frames: Sequence[Image],
    calls: int,
    at_cap: KnownBadAnalyzer,
) -> dict[str, Any]:
    """Per sample, on insets at 30 % over the busy background (half listed, half not,
    so keypoints run on the unmatched half and on listed insets the boxes miss): the
    analyzer looking by keypoints on every unmatched sample and on every second one
    (``known_bad.features_every: 2``), and with keypoints of as many pictures as the
    default cap (``known_bad.feature_pictures: 16``, the listed ones repeated), each
    against the analyzer without keypoints, call after call in the same run."""
    n = len(frames)
    rows: dict[str, Any] = {
        "listed_pictures_with_keypoints": len(every.lists.features),
        "listed_keypoints": len(every.lists.features.descriptors),
    }
    runs = (("every_sample", every), ("every_2nd_sample", every2))
    runs += ((f"every_sample_{len(at_cap.lists.features)}_pictures", at_cap),)
    for name, a in runs:
        t, b = timed_pair(
            lambda a=a: [a.analyze_batch([f]) for f in frames],
            lambda: [boxes_only.analyze_batch([f]) for f in frames],
            calls,
        )
        rows[name] = {
            "cpu_ms_per_sample": pct([x / n for x in t["cpu"]]),
            "without_keypoints_cpu_ms_per_sample": pct([x / n for x in b["cpu"]]),
            "ratio_cpu_p50": round(
                float(np.median(t["cpu"])) / max(float(np.median(b["cpu"])), 1e-9), 2
            ),
            "ratio_wall_p50": round(
                float(np.median(t["wall"])) / max(float(np.median(b["wall"])), 1e-9), 2
            ),
        }
    return rows


def cost(
    base: KnownBadLists,
    specs: Sequence[ListSpec],
    frames: Sequence[Image],
    old: HashAnalyzer,
    sizes: Sequence[int],
    calls: int,
) -> list[dict[str, Any]]:
    """Per sample, at each list size: the whole analyzer against the same analyzer
    without the views and caption cuts (the matcher before them), and the search
    alone (multi-index hashing) against brute force over the same entries and the
    same queries, with a check that both find the same entries."""
    rng = np.random.default_rng(11)
    rows = []
    real = base.lists[0]
    old_ms = timed(lambda: [old.analyze_batch([f]) for f in frames], calls)
    for size in sizes:
        n_random = max(0, size - len(real.labels))
        words = np.concatenate(
            [real.pdq, rng.integers(0, 2**64 - 1, (n_random, 4), np.uint64, endpoint=True)]
        )
        labels = tuple(real.labels) + tuple(f"random-{i}" for i in range(n_random))
        t0 = time.perf_counter()
        lists = KnownBadLists(
            [HashList(real.spec, words, labels, views=real.views, view_of=real.view_of,
                      view_names=real.view_names)]
        )  # fmt: skip
        build_s = time.perf_counter() - t0
        before = KnownBadLists([HashList(real.spec, words, labels)])
        index = lists.index
        analyzer = KnownBadAnalyzer(specs, lists=lists)
        baseline = KnownBadAnalyzer(specs, lists=before, caption_cuts=False)
        sample_t, base_t = timed_pair(
            lambda a=analyzer: [a.analyze_batch([f]) for f in frames],
            lambda a=baseline: [a.analyze_batch([f]) for f in frames],
            calls,
        )
        queries = [analyzer.queries(f)[0] for f in frames]
        brute = HashIndex(index.words, index.thresholds, brute_force_max=10**12)
        search_t, brute_t = timed_pair(
            lambda ix=index, qs=queries: [ix.search(q) for q in qs],
            lambda ix=brute, qs=queries: [ix.search(q) for q in qs],
            max(2, calls // 4) if size >= 100_000 else calls,
        )
        found = [(index.search(q), brute.search(q)) for q in queries]
        same = all(
            np.array_equal(a.entry, b.entry)
            and np.array_equal(a.distance[a.entry >= 0], b.distance[b.entry >= 0])
            for a, b in found
        )
        n = len(frames)
        per_sample, base_sample = sample_t["wall"], base_t["wall"]
        search, brute_ms = search_t["wall"], brute_t["wall"]
        rows.append(
            {
                "entries": len(words),
                "index_rows": len(index),
                "strategy": "multi-index hashing" if index.mih else "brute force",
                "build_s": round(build_s, 2),
                "queries_per_sample": round(sum(len(q) for q in queries) / n, 1),
                "ms_per_sample": pct([t / n for t in per_sample]),
                "before_views_and_cuts_ms_per_sample": pct([t / n for t in base_sample]),
                "ratio_p50_vs_before": round(
                    float(np.median(per_sample)) / max(float(np.median(base_sample)), 1e-9), 2
                ),
                "cpu_ms_per_sample": pct([t / n for t in sample_t["cpu"]]),
                "before_cpu_ms_per_sample": pct([t / n for t in base_t["cpu"]]),
                "search_ms_per_sample": pct([t / n for t in search]),
                "search_cpu_ms_per_sample": pct([t / n for t in search_t["cpu"]]),
                "brute_force_search_ms_per_sample": pct([t / n for t in brute_ms]),
                "brute_force_search_cpu_ms_per_sample": pct([t / n for t in brute_t["cpu"]]),
                "search_speedup_vs_brute_force_p50": round(
                    float(np.median(brute_ms)) / max(float(np.median(search)), 1e-9), 1
                ),
                "search_same_as_brute_force": same,
                "matched_samples": sum(int((a.entry >= 0).any()) for a, _ in found),
                "old_phash_ms_per_sample": pct([t / n for t in old_ms]),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few pictures, 1k/10k entries")
    args = parser.parse_args()
    load_start = [round(v, 2) for v in os.getloadavg()]
    photos = corpus()
    names = sorted(photos)
    if args.quick:
        names = names[:8]
    listed = {n: photos[n] for i, n in enumerate(names) if i % 2 == 0}
    others = {n: photos[n] for i, n in enumerate(names) if i % 2 == 1}
    bg = cv2.resize(next(iter(others.values())), (W, H), interpolation=cv2.INTER_AREA)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, pic in listed.items():
            cv2.imwrite(str(folder / f"{name}.png"), pic[:, :, ::-1])
        specs = [ListSpec("default", (folder,))]
        new = KnownBadAnalyzer(specs)  # keypoints on every unmatched sample
        boxes_only = KnownBadAnalyzer(specs, lists=new.lists, feature_pictures=0)
        old_index = KnownBadIndex.load([folder])
        old = HashAnalyzer(old_index, 8)
        robust = robustness(listed, others, new, old, bg, args.quick, boxes_only)
        inset_frames = [inset(p, bg, 0.3, "tl") for p in list(listed.values())[:4]]
        inset_frames += [inset(p, bg, 0.3, "br") for p in list(others.values())[:4]]
        every2 = KnownBadAnalyzer(specs, lists=new.lists, features_every=2)
        real = new.lists.lists[0]
        repeats = -(-16 // max(1, len(real.pictures)))
        cap = KnownBadLists([replace(real, pictures=(real.pictures * repeats)[:16])])
        at_cap = KnownBadAnalyzer(specs, lists=cap)
        feature_cost = features_cost(
            new, every2, boxes_only, inset_frames, 3 if args.quick else 20, at_cap
        )
        clean = benign(new, old, others, list(listed), args.quick)
        sample_frames = [place(p) for p in list(listed.values())[:4]]
        sizes = (1_000, 10_000) if args.quick else SIZES
        costs = cost(new.lists, specs, sample_frames, old, sizes, 3 if args.quick else 20)
    out = {
        "setting": {
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "frame": f"{W}x{H}",
            "listed_pictures": sorted(listed),
            "other_pictures": sorted(others),
            "pdq_max_distance": 31,
            "phash_max_distance": 8,
            "max_regions": new.max_regions,
            "quick": args.quick,
            "load_average_at_start": load_start,
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        },
        "robustness": robust,
        "benign": clean,
        "cost": costs,
        "feature_cost": feature_cost,
    }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
