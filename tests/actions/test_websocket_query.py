"""Property tests for the event WebSocket's query: any query string is either a filter
and a seq SQLite can hold, or a ValueError (answered 400 at the handshake)."""

from __future__ import annotations

from urllib.parse import urlencode

from hypothesis import given, settings
from hypothesis import strategies as st

from livemod.actions.websocket import MAX_SEQ, _parse_query

KEYS = ["room_id", "user_id", "stream_id", "since", "token"]


@settings(max_examples=500, derandomize=True)
@given(st.text(max_size=80))
def test_any_query_text_parses_or_is_a_value_error(query: str) -> None:
    try:
        _, since = _parse_query(query)
    except ValueError:
        return
    assert since is None or 0 <= since <= MAX_SEQ


@settings(max_examples=500, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(KEYS),
            st.one_of(st.integers(min_value=-(2**70), max_value=2**70).map(str), st.text()),
        ),
        max_size=5,
    )
)
def test_since_is_taken_only_as_a_bounded_decimal(pairs: list[tuple[str, str]]) -> None:
    query = urlencode(pairs)
    sinces = [v for k, v in pairs if k == "since" and v]
    try:
        _, since = _parse_query(query)
    except ValueError:
        return
    if sinces:
        last = sinces[-1]
        assert since == int(last) and last.isascii() and last.isdigit()
    else:
        assert since is None
