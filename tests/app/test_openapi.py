"""The published OpenAPI document is current, and a real daemon keeps to it under fuzzing.

Schemathesis generates requests from ``livemod.app.openapi.document()`` (bounded
examples, a fixed seed, loopback only) against a ``livemod serve`` process: no 5xx,
every status code, content type and body as documented.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from livemod.app import openapi
from tests.conftest import DaemonProcess

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = schemathesis.openapi.from_dict(openapi.document())
EXAMPLES = 30
"""Per operation; with a fixed seed the run is the same every time."""


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, known_bad_dir: Path) -> Iterator[str]:
    proc = DaemonProcess(tmp_path_factory.mktemp("fuzzed"), known_bad_dir)
    proc.start()
    try:
        yield proc.base
    finally:
        proc.stop()


def test_published_document_is_generated_from_the_types() -> None:
    published = (ROOT / "docs" / "openapi.json").read_text()
    assert published == openapi.render(), "run: python -m livemod.app.openapi > docs/openapi.json"


def test_daemon_serves_the_document(fuzzed: str) -> None:
    with urllib.request.urlopen(f"{fuzzed}/v1/openapi.json", timeout=10) as resp:
        served: dict[str, Any] = json.loads(resp.read())
    assert served == openapi.document()


@SCHEMA.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_keeps_to_its_document(case: schemathesis.Case, fuzzed: str) -> None:
    # Schema-valid is not always acceptable: a well-formed URL the ingest policy refuses
    # is a documented 422, so "positive data must be accepted" does not apply.
    case.call_and_validate(
        base_url=fuzzed, timeout=30, excluded_checks=[checks.positive_data_acceptance]
    )
