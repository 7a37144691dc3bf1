"""The model manifest: which ONNX files livemod loads, where they are, and their checksums."""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from livemod.errors import ModelError
from livemod.paths import MODELS_MANIFEST, REPO_ROOT

KNOWN_INPUT_KEYS: dict[str, tuple[str, ...]] = {
    "yolov8-detector": ("size",),
    "nsfw-classifier": ("resize", "crop", "mean"),
    "image-classifier": ("size",),
}
"""Input-spec keys each known kind needs; other kinds are listed but cannot be built."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FIELDS = {
    "name", "kind", "package", "file", "path", "sha256", "license",
    "input", "labels", "min_score", "nms_iou", "weights", "thresholds", "calibration",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One manifest entry.

    The file is ``package``'s directory / ``file``, or ``path`` (absolute or relative to
    the repository root). ``labels`` maps outputs, in model class order, to a policy
    category or ``None``.
    """

    name: str
    kind: str
    package: str | None
    file: str | None
    path: str | None
    sha256: str
    license: str
    input: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str | None] = field(default_factory=dict)
    min_score: float = 0.0
    nms_iou: float = 0.45
    weights: dict[str, float] = field(default_factory=dict)
    """Label -> factor on its score before it becomes a signal (weak signals weigh < 1)."""
    thresholds: dict[str, float] = field(default_factory=dict)
    """Label -> calibrated score below which it raises no signal (else ``min_score``)."""
    calibration: dict[str, Any] = field(default_factory=dict)
    """Where ``thresholds`` came from: the data, the method, the date (kept for people)."""


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """What ``livemod models`` shows for one entry; ``error`` is set when ``ok`` is false."""

    name: str
    kind: str
    path: Path | None
    license: str
    ok: bool
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "path": str(self.path) if self.path else None,
            "license": self.license,
            "ok": self.ok,
            "error": self.error,
        }


def load_manifest(path: Path = MODELS_MANIFEST) -> list[ModelSpec]:
    """Read and validate the manifest; any problem raises ``ModelError`` naming the entry."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"model manifest {path} cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ModelError(f"model manifest {path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
        raise ModelError(f"model manifest {path}: expected a top-level 'models:' list")
    specs: list[ModelSpec] = []
    for i, entry in enumerate(doc["models"]):
        spec = _parse_entry(entry, f"models[{i}]")
        if any(s.name == spec.name for s in specs):
            raise ModelError(f"model manifest {path}: model {spec.name}: name is used twice")
        specs.append(spec)
    return specs


def _parse_entry(entry: object, where: str) -> ModelSpec:
    if not isinstance(entry, dict):
        raise ModelError(f"model manifest {where}: expected a mapping")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ModelError(f"model manifest {where}: field 'name' must be a non-empty string")

    def bad(field_name: str, why: str) -> ModelError:
        return ModelError(f"model {name}: field '{field_name}' {why}")

    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise bad(unknown[0], "is not a known manifest field")
    text: dict[str, str | None] = {}
    for key in ("kind", "package", "file", "path", "sha256", "license"):
        value = entry.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise bad(key, "must be a non-empty string")
        text[key] = value
    for key in ("kind", "sha256", "license"):
        if text[key] is None:
            raise bad(key, "is required")
    if text["path"] is None and (text["package"] is None or text["file"] is None):
        raise bad("path", "is required unless both 'package' and 'file' are given")
    if text["path"] is not None and (text["package"] or text["file"]):
        raise bad("path", "excludes 'package' and 'file': give one or the other")
    if not _SHA256.fullmatch(str(text["sha256"])):
        raise bad("sha256", "must be 64 lowercase hex digits")

    inputs = entry.get("input", {})
    if not isinstance(inputs, dict):
        raise bad("input", "must be a mapping")
    missing = [k for k in KNOWN_INPUT_KEYS.get(str(text["kind"]), ()) if k not in inputs]
    if missing:
        raise bad("input", f"lacks {missing[0]!r}, which kind {text['kind']!r} needs")
    labels = entry.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise bad("labels", "must be a non-empty mapping of output label to category or null")
    for label, category in labels.items():
        if not isinstance(label, str) or not (category is None or isinstance(category, str)):
            raise bad("labels", f"entry {label!r}: expected 'LABEL: category' or 'LABEL: null'")
    return ModelSpec(
        name=name,
        kind=str(text["kind"]),
        package=text["package"],
        file=text["file"],
        path=text["path"],
        sha256=str(text["sha256"]),
        license=str(text["license"]),
        input=dict(inputs),
        labels=dict(labels),
        min_score=_unit_float(entry, "min_score", 0.0, bad),
        nms_iou=_unit_float(entry, "nms_iou", 0.45, bad),
        weights=_unit_map(entry, "weights", bad),
        thresholds=_unit_map(entry, "thresholds", bad),
        calibration=_mapping(entry, "calibration", bad),
    )


def _unit_map(
    entry: Mapping[str, object], key: str, bad: Callable[[str, str], ModelError]
) -> dict[str, float]:
    raw = _mapping(entry, key, bad)
    out: dict[str, float] = {}
    for label in raw:
        out[str(label)] = _unit_float(raw, label, 0.0, _prefixed(bad, key))
    return out


def _prefixed(bad: Callable[[str, str], ModelError], key: str) -> Callable[[str, str], ModelError]:
    """``bad`` for an entry of the mapping ``key``: the field reads ``key.entry``."""

    def inner(entry: str, why: str) -> ModelError:
        return bad(f"{key}.{entry}", why)

    return inner


def _mapping(
    entry: Mapping[str, object], key: str, bad: Callable[[str, str], ModelError]
) -> dict[str, Any]:
    value = entry.get(key, {})
    if not isinstance(value, dict):
        raise bad(key, "must be a mapping")
    return dict(value)


def _unit_float(
    entry: Mapping[str, object], key: str, default: float, bad: Callable[[str, str], ModelError]
) -> float:
    value = entry.get(key, default)
    # bool is an int subclass; `min_score: yes` is a typo, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise bad(key, "must be a number from 0 to 1")
    return float(value)


def resolve_path(spec: ModelSpec) -> Path:
    """Where the model file should be. Checks nothing about the file itself.

    The package is located with ``find_spec`` rather than imported: importing a
    wrapper package can pull in heavy dependencies (``nudenet`` loads ``cv2.dnn``).
    """
    if spec.path is not None:
        path = Path(spec.path).expanduser()
        return path if path.is_absolute() else REPO_ROOT / path
    assert spec.package is not None and spec.file is not None  # guaranteed by load_manifest
    hint = f"package '{spec.package}' is not installed (pip install {spec.package})"
    try:
        found = importlib.util.find_spec(spec.package)
    except (ImportError, ValueError) as exc:
        raise ModelError(f"model {spec.name}: {hint}") from exc
    if found is None:
        raise ModelError(f"model {spec.name}: {hint}")
    if found.submodule_search_locations:
        directory = Path(next(iter(found.submodule_search_locations)))
    elif found.origin:
        directory = Path(found.origin).parent
    else:
        raise ModelError(f"model {spec.name}: package '{spec.package}' has no directory on disk")
    return directory / spec.file


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks so large models do not sit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as fp:
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(spec: ModelSpec) -> Path:
    """Resolve the model file and check its checksum; returns the path or raises ``ModelError``."""
    path = resolve_path(spec)
    if not path.is_file():
        raise ModelError(f"model {spec.name}: file {path} is missing")
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise ModelError(f"model {spec.name}: file {path} cannot be read: {exc}") from exc
    if actual != spec.sha256:
        raise ModelError(
            f"model {spec.name}: file {path} fails its checksum "
            f"(expected sha256 {spec.sha256}, got {actual}); reinstall it or fix the manifest"
        )
    return path


def check_all(specs: Iterable[ModelSpec]) -> list[ModelStatus]:
    """Verify every spec without raising, for listings."""
    statuses: list[ModelStatus] = []
    for spec in specs:
        path: Path | None = None
        try:
            path = resolve_path(spec)
            verify(spec)
        except ModelError as exc:
            statuses.append(_status(spec, path, str(exc)))
        else:
            statuses.append(_status(spec, path, None))
    return statuses


def _status(spec: ModelSpec, path: Path | None, error: str | None) -> ModelStatus:
    return ModelStatus(spec.name, spec.kind, path, spec.license, error is None, error)


@dataclass(frozen=True, slots=True)
class ModelFile:
    """The ONNX file an analyzer loads: the manifest's (verified) or its fp16 variant."""

    path: Path
    precision: str
    """``fp32``, ``fp16`` or ``bf16`` (weights and activations; inputs and outputs stay
    float32)."""
    provider: str | None = None
    """The provider this file must run on (an OpenVINO one, chosen per model on a CPU);
    None: the configured providers."""
