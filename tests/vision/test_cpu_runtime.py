"""Each vision model's CPU runtime: chosen by the accuracy check and a timing, stored, and
what the analyzers then run on."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from livemod.app.cli import main
from livemod.errors import ModelError
from livemod.vision import cpu_runtime, openvino
from livemod.vision.accuracy import DEFAULT_TOLERANCES, Tolerances, reference_frames
from livemod.vision.analyzers import build_vision_analyzers
from livemod.vision.cpu_runtime import ORT_CPU, Candidate, RuntimeReport, choose
from livemod.vision.manifest import ModelSpec, load_manifest
from livemod.vision.precision import PrecisionPlan, select_model

FP32, BF16 = openvino.PROVIDER_FP32, openvino.PROVIDER


def _c(provider: str, ms: float, passed: bool = True) -> Candidate:
    return Candidate(provider, "bf16" if provider == BF16 else "fp32", ms, {}, [], passed)


def test_the_fastest_candidate_within_tolerance_wins_by_a_margin() -> None:
    assert choose([_c(ORT_CPU, 20), _c(FP32, 15), _c(BF16, 8)]).provider == BF16
    # Faster but over tolerance: never chosen, however fast.
    assert choose([_c(ORT_CPU, 20), _c(FP32, 15), _c(BF16, 8, False)]).provider == FP32
    # 5 % faster is within timing noise: the reference stays.
    assert choose([_c(ORT_CPU, 20), _c(FP32, 19), _c(BF16, 8, False)]).provider == ORT_CPU
    assert choose([_c(ORT_CPU, 20), _c(FP32, 9, False)]).provider == ORT_CPU
    assert choose([_c(ORT_CPU, 20)]).provider == ORT_CPU


def test_bf16_is_a_candidate_only_where_the_cpu_computes_it() -> None:
    assert [p for p, _ in cpu_runtime.candidate_providers(False)] == [ORT_CPU, FP32]
    assert cpu_runtime.candidate_providers(True)[-1] == (BF16, "bf16")


@pytest.fixture(scope="module")
def specs() -> dict[str, ModelSpec]:
    return {spec.name: spec for spec in load_manifest()}


@pytest.fixture(scope="module")
def measured(
    specs: dict[str, ModelSpec], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, RuntimeReport]:
    cache = tmp_path_factory.mktemp("runtimes")
    return cache, cpu_runtime.prepare(specs["opennsfw"], cache)


def test_a_report_measures_every_candidate_and_is_stored(
    measured: tuple[Path, RuntimeReport], specs: dict[str, ModelSpec]
) -> None:
    cache, report = measured
    want = [p for p, _ in cpu_runtime.candidate_providers(openvino.bf16_capable())]
    assert [c.provider for c in report.candidates] == want
    assert all(c.ms_per_frame > 0 for c in report.candidates)
    reference = report.candidates[0]
    assert reference.passed and reference.provider == ORT_CPU
    # OpenVINO fp32 computes the reference's scores to rounding.
    fp32 = report.candidates[1]
    assert fp32.passed and fp32.measured["score_max_abs_diff"] is not None
    assert float(fp32.measured["score_max_abs_diff"]) < 1e-3
    assert report.choice.passed and report.chosen == choose(report.candidates).provider
    assert report.frames == [name for name, _ in reference_frames()]
    stored = json.loads(cpu_runtime.report_path(specs["opennsfw"], cache).read_text())
    assert stored["chosen"] == report.chosen and stored["cpu"] == openvino.describe_cpu()
    assert RuntimeReport.load(cpu_runtime.report_path(specs["opennsfw"], cache)) == report


def test_a_stored_report_is_read_not_measured_again(
    measured: tuple[Path, RuntimeReport],
    specs: dict[str, ModelSpec],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache, report = measured

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("measured again")

    monkeypatch.setattr(cpu_runtime, "measure", fail)
    assert cpu_runtime.prepare(specs["opennsfw"], cache) == report
    # Another key (tolerances here) is another measurement.
    with pytest.raises(AssertionError, match="measured again"):
        cpu_runtime.prepare(specs["opennsfw"], cache, tolerances=Tolerances(score=0.01))


def test_the_analyzer_runs_on_the_chosen_runtime_within_tolerance(
    measured: tuple[Path, RuntimeReport], specs: dict[str, ModelSpec]
) -> None:
    cache, report = measured
    plan = PrecisionPlan("auto", "cpu", cache, cpu_runtimes=True)
    model = select_model(specs["opennsfw"], plan, providers=[ORT_CPU])
    assert model.provider == (None if report.chosen == ORT_CPU else report.chosen)
    assert model.precision == report.choice.precision
    chosen, reference = (
        build_vision_analyzers(
            list(specs.values()), ["opennsfw"], 1, [ORT_CPU], precision=precision
        )[0]
        for precision in (plan, None)
    )
    assert chosen.session.get_providers()[0] == report.chosen  # type: ignore[attr-defined]
    assert chosen.precision == report.choice.precision  # type: ignore[attr-defined]
    for _, image in reference_frames():
        a, b = reference.analyze_batch([image])[0], chosen.analyze_batch([image])[0]
        assert abs(a.scores["opennsfw"] - b.scores["opennsfw"]) <= DEFAULT_TOLERANCES.score


def test_with_no_candidate_within_tolerance_the_model_stays_on_onnx_runtime(
    specs: dict[str, ModelSpec], tmp_path: Path
) -> None:
    nothing_passes = Tolerances(score=-1.0)
    report = cpu_runtime.prepare(specs["efficientnet-lite0"], tmp_path, tolerances=nothing_passes)
    assert [c.passed for c in report.candidates] == [True] + [False] * (len(report.candidates) - 1)
    assert report.chosen == ORT_CPU
    plan = PrecisionPlan("auto", "cpu", tmp_path, nothing_passes, cpu_runtimes=True)
    model = select_model(specs["efficientnet-lite0"], plan, providers=[ORT_CPU])
    assert (model.precision, model.provider) == ("fp32", None)


def test_a_damaged_or_edited_report_is_measured_again(
    measured: tuple[Path, RuntimeReport], specs: dict[str, ModelSpec], tmp_path: Path
) -> None:
    cache, _ = measured
    stored = json.loads(cpu_runtime.report_path(specs["opennsfw"], cache).read_text())
    where = cpu_runtime.report_path(specs["opennsfw"], tmp_path)
    failed = next((c["provider"] for c in stored["candidates"] if not c["passed"]), None)
    for chosen in ("SomeOtherProvider", failed):
        if chosen is not None:
            where.write_text(json.dumps({**stored, "chosen": chosen}))
            assert RuntimeReport.load(where) is None
    where.write_text('{"model": "opennsfw", "chos')
    assert RuntimeReport.load(where) is None
    again = cpu_runtime.prepare(specs["opennsfw"], tmp_path)
    assert again.choice.passed and RuntimeReport.load(where) == again


def test_starts_together_measure_once(
    specs: dict[str, ModelSpec], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = cpu_runtime.measure

    def counted(*args: object, **kwargs: object) -> list[Candidate]:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cpu_runtime, "measure", counted)
    reports: list[RuntimeReport] = []
    threads = [
        threading.Thread(
            target=lambda: reports.append(
                cpu_runtime.prepare(specs["efficientnet-lite0"], tmp_path)
            )
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(reports) == 3
    assert reports[0] == reports[1] == reports[2]


def test_an_unwritable_cache_keeps_onnx_runtime(
    specs: dict[str, ModelSpec], tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("not a folder")
    bad = tmp_path / "file" / "cache"
    with pytest.raises(ModelError, match=r"set vision\.model_cache to a writable folder"):
        cpu_runtime.prepare(specs["opennsfw"], bad)
    plan = PrecisionPlan("auto", "cpu", bad, cpu_runtimes=True)
    model = select_model(specs["opennsfw"], plan, providers=[ORT_CPU])
    assert (model.precision, model.provider) == ("fp32", None)


def test_providers_other_than_auto_measure_nothing(
    specs: dict[str, ModelSpec], tmp_path: Path
) -> None:
    model = select_model(
        specs["opennsfw"], PrecisionPlan("auto", "cpu", tmp_path), providers=[ORT_CPU]
    )
    assert (model.precision, model.provider) == ("fp32", None)
    assert not list(tmp_path.iterdir())
    model = select_model(
        specs["opennsfw"], PrecisionPlan("auto", "cpu", tmp_path), providers=[BF16]
    )
    assert model.precision == "bf16"


def test_models_runtimes_command(
    measured: tuple[Path, RuntimeReport],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache, report = measured
    monkeypatch.setenv("LIVEMOD_VISION__MODEL_CACHE", str(cache))
    monkeypatch.setenv("LIVEMOD_VISION__MODELS", '["opennsfw"]')
    assert main(["models", "--runtimes"]) == 0
    assert capsys.readouterr().out == f"opennsfw: {report.summary()}\n"
    assert main(["models", "--runtimes", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["chosen"] == report.chosen and len(entry["candidates"]) == len(report.candidates)
