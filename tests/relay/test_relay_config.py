"""Relay configuration errors name their field; the delay must outlast the vote."""

from __future__ import annotations

from pathlib import Path

import pytest

from livemod.config import load_config
from livemod.errors import ConfigError
from livemod.policy.taxonomy import load_policy
from livemod.relay.link import check_delay, render


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("rtmp://127.0.0.1/safe/{room}", "unknown placeholder {room}"),
        ("rtmp:///safe/{room_id}", "needs a host"),
        ("http://example.org/{room_id}", "rtmp:// or rtmps:// URL or a local HLS directory"),
        ("relative/{room_id}", "absolute path"),
    ],
)
def test_a_bad_output_names_the_field(output: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {"LIVEMOD_RELAY__OUTPUT": output})
    assert "relay.output" in str(info.value) and expected in str(info.value)


def test_an_unwritable_hls_directory_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"relay\.output.*not writable"):
        load_config(None, {"LIVEMOD_RELAY__OUTPUT": f"{blocker}/hls/{{room_id}}"})
    ok = load_config(None, {"LIVEMOD_RELAY__OUTPUT": f"{tmp_path}/hls/{{room_id}}"})
    assert render(ok.relay.output, stream_id="s", user_id="u", room_id="r").endswith("/hls/r")


def test_a_delay_the_vote_outruns_is_refused() -> None:
    config = load_config(None, {"LIVEMOD_RELAY__DELAY_S": "1.0", "LIVEMOD_RELAY__MAX_DELAY_S": "2"})
    policy = load_policy(config.policy)
    with pytest.raises(ConfigError, match=r"relay\.delay_s=1 is shorter"):
        check_delay(config, policy)
    check_delay(load_config(None, {}), policy)  # the default 3 s is enough
