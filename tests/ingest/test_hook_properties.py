"""Property tests for what streaming servers send: any form or JSON body either parses
into a HookCall or is refused with a RequestError (a 4xx), never anything else; an
identity is only ever built from ids that fully match the id pattern."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from livemod.errors import RequestError
from livemod.ingest.hooks import IdentityRules, parse_mediamtx, parse_nginx, parse_srs

FULL_ID = re.compile(r"[A-Za-z0-9_.@\-]{1,128}")
NGINX_KEYS = ["call", "app", "name", "addr", "clientid", "tcurl", "flashver", "user_id", "key"]
text = st.text(max_size=40)
id_like = st.one_of(
    st.from_regex(FULL_ID, fullmatch=True),
    st.from_regex(FULL_ID, fullmatch=True).map(lambda s: s + "\n"),
    text,
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
nginx_form = st.dictionaries(
    st.sampled_from(NGINX_KEYS) | text,
    st.one_of(st.sampled_from(["publish", "publish_done", "play", "done"]), id_like, text),
    max_size=10,
)
RULES = IdentityRules(default_user_id=None)


def identified(call: Any) -> None:
    try:
        who = RULES.identify(call)
    except RequestError as exc:
        assert 400 <= exc.status < 500
        return
    assert FULL_ID.fullmatch(who.user_id) and FULL_ID.fullmatch(who.room_id)


@settings(max_examples=300, derandomize=True)
@given(nginx_form)
def test_nginx_form_parses_or_is_refused(form: dict[str, str]) -> None:
    try:
        call = parse_nginx(form)
    except RequestError as exc:
        assert exc.status == 400
        return
    assert call.server == "nginx-rtmp" and call.kind in ("publish", "publish_done", "play", "other")
    identified(call)


@settings(max_examples=300, derandomize=True)
@given(
    st.dictionaries(
        st.sampled_from(["action", "path", "id", "query", "event", "user", "ip", "protocol"])
        | text,
        st.one_of(st.sampled_from(["publish", "read", "ready"]), id_like, json_value),
        max_size=8,
    )
)
def test_mediamtx_body_parses_or_is_refused(data: dict[str, Any]) -> None:
    try:
        call = parse_mediamtx(data)
    except RequestError as exc:
        assert exc.status == 400
        return
    assert call.server == "mediamtx"
    identified(call)


@settings(max_examples=300, derandomize=True)
@given(
    st.dictionaries(
        st.sampled_from(["action", "app", "stream", "client_id", "param", "tcUrl", "ip"]) | text,
        st.one_of(st.sampled_from(["on_publish", "on_unpublish"]), id_like, json_value),
        max_size=8,
    )
)
def test_srs_body_parses_or_is_refused(data: dict[str, Any]) -> None:
    try:
        call = parse_srs(data)
    except RequestError as exc:
        assert exc.status == 400
        return
    assert call.server == "srs"
    identified(call)
