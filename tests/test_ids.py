"""One id rule everywhere: ``web.is_id`` (API handlers, WHIP, hooks) and the ``Id`` type
of the request models (and so the OpenAPI document) accept exactly the same strings."""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from livemod.web import Id, is_id

RULE = re.compile(r"[A-Za-z0-9_.@\-]{1,128}")
ID_TYPE: TypeAdapter[str] = TypeAdapter(Id)


def model_accepts(value: str) -> bool:
    try:
        ID_TYPE.validate_python(value)
    except ValidationError:
        return False
    return True


@settings(max_examples=1000, derandomize=True)
@given(
    st.one_of(
        st.text(max_size=140),
        st.from_regex(RULE, fullmatch=True),
        st.from_regex(RULE, fullmatch=True).map(lambda s: s + "\n"),
        st.from_regex(RULE, fullmatch=True).map(lambda s: "\n" + s),
    )
)
@example("alice\n")
@example("a" * 128)
@example("a" * 129)
@example("")
def test_is_id_and_the_model_type_agree_with_the_full_match_rule(value: str) -> None:
    expected = RULE.fullmatch(value) is not None
    assert is_id(value) is expected
    assert model_accepts(value) is expected
