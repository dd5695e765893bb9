"""Outside JSON is parsed like Go's encoding/json bounds it: 10,000 levels parse, deeper is broken JSON,
and nothing ever raises RecursionError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canrun.untrusted_json import MAX_DEPTH, JSONTooDeep, _parse_deep, loads


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def test_the_depth_go_accepts_parses_and_one_more_level_is_refused() -> None:
    doc = loads(nested(MAX_DEPTH))
    for _ in range(MAX_DEPTH - 1):
        doc = doc[0]
    assert doc == [1]
    with pytest.raises(JSONTooDeep, match="10001 levels"):
        loads(nested(MAX_DEPTH + 1))


def test_a_hundred_thousand_levels_are_a_value_error_not_a_recursion_error() -> None:
    for text in (nested(100_000), '{"a":' * 100_000 + "1" + "}" * 100_000, "[" * 100_000):
        with pytest.raises(ValueError):
            loads(text.encode())


def test_brackets_inside_strings_do_not_count() -> None:
    text = '{"k": "' + "[" * 50_000 + '", "deep": ' + nested(1_500) + "}"
    assert loads(text)["k"] == "[" * 50_000


def test_a_config_with_an_unknown_key_nested_1500_deep_keeps_its_known_fields() -> None:
    deep: Any = {}
    for _ in range(1_499):
        deep = {"x": deep}
    text = '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/app"]},"unknown":' + \
        '{"x":' * 1_499 + '{}' + "}" * 1_499 + "}"
    doc = loads(text.encode())
    assert doc["config"] == {"Entrypoint": ["/bin/app"]} and doc["os"] == "linux"


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                     | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=4), kids, max_size=4),
                     max_leaves=30)


@settings(max_examples=200, deadline=None)
@given(_json, st.sampled_from([None, 0, 2]))
def test_the_deep_parser_gives_what_json_gives(value: Any, indent: int | None) -> None:
    text = json.dumps(value, indent=indent)
    assert _parse_deep(text) == json.loads(text)


@pytest.mark.parametrize("text", ['[1,]', '{"a" 1}', '{"a":1,}', '[1 2]', '"open', '[1]x', '{1:2}', '[tru]', ''])
def test_the_deep_parser_refuses_what_json_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        _parse_deep(text)
