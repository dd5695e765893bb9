"""The API stand-in's own semantics, where a mistake would make cluster tests pass for the wrong reason."""

from __future__ import annotations

import pytest

from tests.support.kubeapi import _HTTPError, json_patch, label_selector_matches, merge_patch

LABELS = {"app": "web", "tier": "front", "canrun.io/mode": "enforce"}


@pytest.mark.parametrize("selector, expected", [
    ("", True),
    ("app=web", True), ("app==web", True), ("app=db", False),
    ("app!=db", True), ("app!=web", False), ("missing!=x", True),
    ("tier in (front,back)", True), ("tier in (back)", False),
    ("tier notin (back)", True), ("tier notin (front, back)", False), ("missing notin (x)", True),
    ("canrun.io/mode", True), ("!canrun.io/mode", False), ("!missing", True),
    ("app=web,tier in (front),!missing", True), ("app=web,tier=back", False),
])
def test_label_selectors(selector: str, expected: bool) -> None:
    assert label_selector_matches(selector, LABELS) is expected


def test_merge_patch_deletes_with_null_and_replaces_lists() -> None:
    doc = {"a": {"b": 1, "c": 2}, "l": [1, 2]}
    assert merge_patch(doc, {"a": {"b": None, "d": 3}, "l": [3]}) == {"a": {"c": 2, "d": 3}, "l": [3]}


def test_json_patch_test_op_guards_the_change() -> None:
    doc = {"webhooks": [{"name": "a", "clientConfig": {}}]}
    ok = json_patch(doc, [{"op": "test", "path": "/webhooks/0/name", "value": "a"},
                          {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "X"}])
    assert ok["webhooks"][0]["clientConfig"]["caBundle"] == "X" and "caBundle" not in doc["webhooks"][0]["clientConfig"]
    with pytest.raises(_HTTPError) as info:
        json_patch(doc, [{"op": "test", "path": "/webhooks/0/name", "value": "b"}])
    assert info.value.code == 422
