from __future__ import annotations

import onnxruntime as ort
import pytest

from livemod.vision.providers import check_single_runtime, installed_runtimes, plan, resolve

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def test_auto_prefers_tensorrt_then_cuda() -> None:
    assert plan("auto", [TRT, CUDA, CPU]).providers == (TRT, CUDA, CPU)
    p = plan("auto", [CUDA, CPU])
    assert p.providers == (CUDA, CPU) and p.device == "cuda" and p.fallback_reason is None


def test_auto_falls_back_to_cpu_with_a_reason() -> None:
    p = plan("auto", [CPU])
    assert p.providers == (CPU,) and p.device == "cpu"
    assert p.fallback_reason and "onnxruntime-gpu" in p.fallback_reason


def test_explicit_cuda_without_it_says_why() -> None:
    p = plan("cuda", [CPU])
    assert p.device == "cpu" and "vision.providers=cuda" in str(p.fallback_reason)


def test_cpu_choice_ignores_gpu() -> None:
    assert plan("cpu", [CUDA, CPU]).providers == (CPU,)


def test_this_install_has_exactly_one_runtime() -> None:
    assert len(installed_runtimes()) == 1
    check_single_runtime()


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs a CUDA GPU"
)
def test_gpu_host_resolves_to_cuda() -> None:
    assert resolve("auto").device in ("cuda", "tensorrt")


def test_dockerfile_installs_with_the_tested_script() -> None:
    """Dockerfile.gpu cannot be built here (no Docker engine): it must run exactly
    scripts/install-gpu.sh, the script a bare GPU host runs, and check health."""
    from livemod.paths import REPO_ROOT

    dockerfile = (REPO_ROOT / "Dockerfile.gpu").read_text()
    script = (REPO_ROOT / "scripts" / "install-gpu.sh").read_text()
    assert "bash scripts/install-gpu.sh" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert "USER livemod" in dockerfile and "useradd" in dockerfile
    assert "onnxruntime-gpu" in script and "pip uninstall" in script
    assert 'bin/livemod" models' in script
