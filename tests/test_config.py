from __future__ import annotations

from pathlib import Path

import pytest

from livemod.config import load_config
from livemod.errors import ConfigError
from livemod.paths import CONFIGS_DIR


def test_embedded_defaults_match_the_design() -> None:
    cfg = load_config(None, environ={})
    assert (cfg.http.host, cfg.http.port) == ("127.0.0.1", 8080)
    assert (cfg.websocket.host, cfg.websocket.port) == ("127.0.0.1", 8765)
    assert cfg.sampling.fps == 4.0
    assert cfg.whip.ice_servers == [] and cfg.known_bad.paths == []


def test_documented_config_file_is_valid_and_equals_defaults() -> None:
    documented = load_config(CONFIGS_DIR / "livemod.yaml", environ={})
    defaults = load_config(None, environ={})
    assert documented.sampling == defaults.sampling
    assert documented.http == defaults.http
    assert documented.policy.resolve() == defaults.policy.resolve()
    assert documented.vision.manifest.resolve() == defaults.vision.manifest.resolve()


def test_environment_overrides(tmp_path: Path) -> None:
    env = {
        "LIVEMOD_HTTP__PORT": "9001",
        "LIVEMOD_KNOWN_BAD__PATHS": '["/srv/a", "/srv/b"]',
        "LIVEMOD_LOG_LEVEL": "DEBUG",
        "LIVEMOD_LLM_API_KEY": "not-an-override",
    }
    cfg = load_config(None, environ=env)
    assert cfg.http.port == 9001
    assert [str(p) for p in cfg.known_bad.paths] == ["/srv/a", "/srv/b"]
    assert cfg.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("http:\n  prot: 1\n", "http.prot: unknown field"),
        ("sampling:\n  fps: 100\n", "sampling.fps"),
        ("websocket:\n  port: -1\n", "websocket.port"),
        ("http:\n  host: 0.0.0.0\n", "http.token"),
        ("sampling:\n  fps: 5\n  boost_fps: 2\n", "boost_fps must be >= fps"),
        ("- a list\n", "mapping at the top level"),
        ("http: [\n", "not valid YAML"),
        (
            "capacity:\n  cascade:\n    settle_scores: {sexual: 0.9}\n",
            "only known_bad (known-bad matching runs before the models) can settle a sample, "
            "not sexual",
        ),
        ("capacity:\n  cascade:\n    settle_scores: {known_bad: 1.2}\n", "within 0-1"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert needle in str(err.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("store:\n  path: data/x.db\nknown_bad:\n  paths: [bad]\n")
    cfg = load_config(path, environ={})
    assert cfg.store.path == tmp_path / "data/x.db"
    assert cfg.known_bad.paths == [tmp_path / "bad"]
    assert cfg.evidence_dir == tmp_path / "data/evidence"


def test_default_schemes_are_those_this_ffmpeg_can_open() -> None:
    from livemod.config import ffmpeg_protocols, openable_schemes

    protocols = ffmpeg_protocols()
    # The probe reads the libavformat PyAV loaded: an empty answer would trust anything.
    assert {"file", "http", "rtmp"} <= protocols, protocols
    schemes = load_config(None, environ={}).ingest.schemes
    assert schemes == openable_schemes(schemes) and "file" in schemes
    assert ("srt" in schemes) == ("srt" in protocols)
    explicit = {"LIVEMOD_INGEST__SCHEMES": "[rtmp, srt]"}
    if "srt" in protocols:  # a build with libsrt takes it when asked for
        assert load_config(None, environ=explicit).ingest.schemes == ["rtmp", "srt"]
        return
    with pytest.raises(ConfigError) as err:
        load_config(None, environ=explicit)
    assert "ingest.schemes" in str(err.value) and "'srt'" in str(err.value)


def test_a_scheme_ffmpeg_cannot_open_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("ingest:\n  schemes: [rtmp, nosuchproto]\n")
    with pytest.raises(ConfigError, match=r"ingest\.schemes: .*'nosuchproto'"):
        load_config(path, environ={})
    path.write_text(
        "ingest:\n  schemes: null\n  file_roots: [media]\n  allow_hosts: [10.0.0.0/8]\n"
    )
    ingest = load_config(path, environ={}).ingest
    assert ingest.schemes == load_config(None, environ={}).ingest.schemes
    assert ingest.file_roots == [tmp_path / "media"]  # relative to the file, as other paths
    path.write_text("ingest:\n  allow_hosts: [intranet]\n")
    with pytest.raises(ConfigError, match=r"ingest\.allow_hosts"):
        load_config(path, environ={})
