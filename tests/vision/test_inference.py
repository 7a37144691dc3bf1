"""The session runner: IOBinding gives what ``session.run`` gives, from any thread."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from livemod.testing.media import fit, photo
from livemod.vision.inference import (
    MAX_BUFFERED_SHAPES,
    SessionRunner,
    make_session,
    provider_entries,
    session_device,
    use_io_binding,
)
from livemod.vision.manifest import ModelSpec, load_manifest, verify
from livemod.vision.nudenet import NudeNetAnalyzer
from livemod.vision.opennsfw import OpenNsfwAnalyzer

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "horse", "text", "clock")


@pytest.fixture(scope="module")
def specs() -> dict[str, ModelSpec]:
    return {spec.name: spec for spec in load_manifest()}


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [fit(photo(name)) for name in PHOTOS]


@pytest.fixture(scope="module")
def affine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model, y = relu(x * 2 - 1) over (N, 4): cheap enough to call thousands of times."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["x2"]),
        helper.make_node("Sub", ["x2", "one"], ["z"]),
        helper.make_node("Relu", ["z"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "affine", [x], [y], initializer=[two, one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("tiny") / "affine.onnx"
    onnx.save(model, str(path))
    return path


def test_io_binding_choice() -> None:
    assert use_io_binding("auto", "cuda") and use_io_binding("auto", "tensorrt")
    assert not use_io_binding("auto", "cpu")
    assert use_io_binding("on", "cpu") and not use_io_binding("off", "cuda")


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_bound_nudenet_equals_session_run(
    specs: dict[str, ModelSpec], frames: list[np.ndarray], batch: int
) -> None:
    plain = NudeNetAnalyzer(specs["nudenet-320n"], providers=["CPUExecutionProvider"])
    bound = NudeNetAnalyzer(
        specs["nudenet-320n"], providers=["CPUExecutionProvider"], io_binding=True
    )
    assert bound.runner.io_binding and bound.runner.device == "cpu"
    x, metas = plain.preprocess(frames[:batch])
    np.testing.assert_array_equal(bound.raw(x), plain.raw(x))
    assert bound.infer(x, metas) == plain.infer(x, metas)
    # The device buffer for this shape is kept for the next call.
    assert bound.runner.buffered_shapes() == [(batch, 3, 320, 320)]


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_bound_opennsfw_equals_session_run(
    specs: dict[str, ModelSpec], frames: list[np.ndarray], batch: int
) -> None:
    plain = OpenNsfwAnalyzer(specs["opennsfw"], providers=["CPUExecutionProvider"])
    bound = OpenNsfwAnalyzer(specs["opennsfw"], providers=["CPUExecutionProvider"], io_binding=True)
    x = plain.preprocess(frames[:batch])
    np.testing.assert_array_equal(bound.raw(x), plain.raw(x))
    name = plain.session.get_inputs()[0].name
    np.testing.assert_array_equal(bound.raw(x), plain.session.run(None, {name: x})[0])


def test_buffers_are_reused_and_bounded(affine: Path) -> None:
    runner = SessionRunner(make_session(affine, 1, ["CPUExecutionProvider"]), io_binding=True)
    first = runner._buffer("x", np.zeros((2, 4), np.float32))
    again = runner._buffer("x", np.ones((2, 4), np.float32))
    assert again is first  # same allocation, new contents
    for n in range(1, MAX_BUFFERED_SHAPES + 4):
        x = np.full((n, 4), n, np.float32)
        np.testing.assert_array_equal(runner.run({"x": x})[0], np.maximum(x * 2 - 1, 0))
    shapes = runner.buffered_shapes()
    assert len(shapes) == MAX_BUFFERED_SHAPES
    assert shapes[-1] == (MAX_BUFFERED_SHAPES + 3, 4)  # the oldest went first


def test_bound_runner_is_thread_safe(affine: Path) -> None:
    """Threads share one runner and session; each must get its own frames' results.
    (With one buffer shared by all threads, 22-221 of these 3600 calls came back wrong.)"""
    runner = SessionRunner(make_session(affine, 1, ["CPUExecutionProvider"]), io_binding=True)
    errors: list[str] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(600):
            x = rng.uniform(0, 4, (int(rng.integers(1, 4)), 4)).astype(np.float32)
            (y,) = runner.run({"x": x})
            if not np.array_equal(y, np.maximum(x * 2 - 1, 0)):
                errors.append(f"thread {seed}: wrong output")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_cpu_session_device(affine: Path) -> None:
    session = make_session(affine, 1, ["CPUExecutionProvider"])
    assert session_device(session) == "cpu"
    assert not SessionRunner(session, io_binding=False).io_binding


@pytest.mark.skipif(not HAS_CUDA, reason="needs the CUDA provider (onnxruntime-gpu on a GPU)")
def test_cuda_io_binding_matches_cpu(specs: dict[str, ModelSpec], frames: list[np.ndarray]) -> None:
    gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    cpu = OpenNsfwAnalyzer(specs["opennsfw"], providers=["CPUExecutionProvider"])
    bound = OpenNsfwAnalyzer(specs["opennsfw"], providers=gpu, io_binding=True)
    assert bound.runner.device == "cuda"
    for batch in (1, 3, 8):
        x = cpu.preprocess(frames[:batch])
        np.testing.assert_allclose(bound.raw(x), cpu.raw(x), atol=1e-3)
    nude_cpu = NudeNetAnalyzer(specs["nudenet-320n"], providers=["CPUExecutionProvider"])
    nude_gpu = NudeNetAnalyzer(specs["nudenet-320n"], providers=gpu, io_binding=True)
    x, _ = nude_cpu.preprocess(frames)
    np.testing.assert_allclose(nude_gpu.raw(x)[:, 4:], nude_cpu.raw(x)[:, 4:], atol=1e-3)


def test_tensorrt_keeps_its_engines_in_the_cache_folder(tmp_path: Path) -> None:
    providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    entries = provider_entries(providers, tmp_path / "trt")
    trt, cuda, cpu = entries
    assert isinstance(trt, tuple) and trt[0] == "TensorrtExecutionProvider"
    assert trt[1]["trt_engine_cache_enable"] == "True"
    assert trt[1]["trt_engine_cache_path"] == str(tmp_path / "trt")
    assert trt[1]["trt_timing_cache_path"] == str(tmp_path / "trt")
    assert (cuda, cpu) == ("CUDAExecutionProvider", "CPUExecutionProvider")
    # No cache folder configured: providers pass through untouched.
    assert provider_entries(providers, None) == providers
    # A CPU session never creates the engine folder.
    spec = next(s for s in load_manifest() if s.name == "opennsfw")
    make_session(verify(spec), 1, ["CPUExecutionProvider"], engine_cache=tmp_path / "unused")
    assert not (tmp_path / "unused").exists()
