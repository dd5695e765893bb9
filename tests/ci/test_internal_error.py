"""A bug of ours while judging one container is an ``internal error`` line, never a traceback or a pass.

The bug is injected for real: the checks raise ``RuntimeError`` for one image
(a stand-in for any exception canrun did not mean to raise), the rest of the
run is the real engine against the real local registry.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from canrun import cli
from tests.support.bugs import inject_bug
from tests.support.images import Catalogue

pytestmark = pytest.mark.registry

MANIFEST = """\
apiVersion: v1
kind: Pod
metadata:
  name: two
spec:
  containers:
    - name: broken
      image: {broken}
    - name: user
      image: {missing_user}
"""


@pytest.fixture
def buggy_checks(monkeypatch: pytest.MonkeyPatch, catalogue: Catalogue) -> str:
    """Make the checks raise for the whiteout image only; returns that image's reference."""
    broken = catalogue.ref("whiteout")
    inject_bug(monkeypatch, broken)
    return broken


def _run(tmp_path: Path, catalogue: Catalogue, broken: str, *more: str) -> tuple[int, str, str]:
    path = tmp_path / "pod.yaml"
    path.write_text(MANIFEST.format(broken=broken, missing_user=catalogue.ref("missing-user")))
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["check", "--no-cache", "-f", str(path), "--insecure-registry", catalogue.host, *more],
                    stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_check_reports_an_internal_error_and_exits_2_without_a_traceback(
        tmp_path: Path, catalogue: Catalogue, buggy_checks: str) -> None:
    code, out, err = _run(tmp_path, catalogue, buggy_checks, "--format", "json")
    assert code == 2, err
    assert "Traceback" not in out + err
    assert "internal error judging 1 container(s)" in err and "rerun with -v" in err
    by_container = {(f["container"], f["rule"]): f for f in json.loads(out)["findings"]}
    broken = by_container[("broken", "internal-error")]
    assert "RuntimeError: injected bug" in broken["message"] and broken["severity"] == "warning"
    assert ("user", "user-not-found") in by_container  # the other container is still judged


def test_strict_makes_it_an_error_and_verbose_shows_the_traceback(
        tmp_path: Path, catalogue: Catalogue, buggy_checks: str) -> None:
    code, out, err = _run(tmp_path, catalogue, buggy_checks, "--format", "json", "--strict", "-v")
    assert code == 2
    assert "Traceback" in err and "RuntimeError: injected bug" in err
    rules = {(f["container"], f["rule"]): f["severity"] for f in json.loads(out)["findings"]}
    assert rules[("broken", "internal-error")] == "error"


def test_a_bug_outside_the_engine_is_one_line_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from canrun import inspect as inspect_module

    def explode(*_: Any, **__: Any) -> Any:
        raise KeyError("oops")

    monkeypatch.setattr(inspect_module, "inspect_image", explode)
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["inspect", "--no-cache", "127.0.0.1:9/x:1"], stdout=out, stderr=err)
    assert code == 2
    assert err.getvalue() == ("canrun: internal error: KeyError: 'oops' (a bug in canrun; rerun with -v for the "
                              "traceback)\n")
    err = io.StringIO()
    assert cli.main(["inspect", "-v", "--no-cache", "127.0.0.1:9/x:1"], stdout=out, stderr=err) == 2
    assert "Traceback (most recent call last)" in err.getvalue()
