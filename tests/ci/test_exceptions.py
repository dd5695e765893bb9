"""The config file's ``exceptions:`` list exempts findings exactly as the ``canrun.io/skip`` annotation does.

Real verdicts from the local registry: ``whiteout`` has no ``/app/server`` (command-not-found).  The same
workload is exempted by an entry that matches its namespace, name and image, and not by one that names
another namespace, has expired, or names another rule; the exemption is reported with what made it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from canrun import cli
from tests.support.images import Catalogue

pytestmark = pytest.mark.registry

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: batch-old
  namespace: legacy-payments
spec:
  template:
    spec:
      containers:
        - name: server
          image: {image}
"""


def _check(tmp_path: Path, catalogue: Catalogue, config: str, *more: str) -> tuple[int, str, str]:
    (tmp_path / "deploy.yaml").write_text(MANIFEST.format(image=catalogue.ref("whiteout")))
    (tmp_path / ".canrun.yaml").write_text(config.replace("HOST", catalogue.host))
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["check", "--no-cache", "-f", str(tmp_path / "deploy.yaml"), "--config",
                     str(tmp_path / ".canrun.yaml"), "--insecure-registry", catalogue.host, *more],
                    stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_a_matching_entry_exempts_and_says_so(tmp_path: Path, catalogue: Catalogue) -> None:
    config = """\
exceptions:
  - namespace: legacy-*
    workload: batch-*
    image: HOST/*
    rules: [command-not-found]
    expires: 2999-12-31
    reason: being rebuilt
"""
    code, out, err = _check(tmp_path, catalogue, config, "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert not [f for f in doc["findings"] if f["rule"] == "command-not-found"]
    (exempted,) = [f for f in doc["suppressed"] if f["rule"] == "command-not-found"]
    assert exempted["evidence"]["exempted_by"] == "exceptions[0] of .canrun.yaml (being rebuilt)"
    code, out, _ = _check(tmp_path, catalogue, config)
    assert "1 finding(s) exempted by exceptions[0] of .canrun.yaml (being rebuilt) (command-not-found)" in out


@pytest.mark.parametrize("entry", [
    "namespace: payments\n    rules: [all]",                    # another namespace
    "workload: web-*\n    rules: [all]",                        # another name
    "image: other.example/*\n    rules: [all]",                 # another image
    "rules: [exec-format]",                                       # another rule
    "rules: [all]\n    expires: 2020-01-01",                     # expired
])
def test_an_entry_that_does_not_match_exempts_nothing(tmp_path: Path, catalogue: Catalogue, entry: str) -> None:
    code, out, err = _check(tmp_path, catalogue, f"exceptions:\n  - {entry}\n", "--format", "json")
    assert code == 1, err
    assert [f["rule"] for f in json.loads(out)["findings"]] == ["command-not-found"]
    assert json.loads(out)["suppressed"] == []
    if "expires" in entry:
        assert "exceptions[0] of" in err and "expired on 2020-01-01: it exempts nothing" in err


def test_the_list_and_the_annotation_are_one_mechanism(tmp_path: Path, catalogue: Catalogue) -> None:
    """Exempted the same way: same suppressed findings, each naming its origin."""
    annotated = MANIFEST.replace("  namespace: legacy-payments\n",
                                 "  namespace: legacy-payments\n  annotations:\n    canrun.io/skip: command-not-found\n")
    (tmp_path / "a.yaml").write_text(annotated.format(image=catalogue.ref("whiteout")))
    out = io.StringIO()
    cli.main(["check", "--no-cache", "-f", str(tmp_path / "a.yaml"), "--insecure-registry", catalogue.host,
              "--format", "json"], stdout=out, stderr=io.StringIO())
    by_annotation = json.loads(out.getvalue())["suppressed"]
    _, listed, _ = _check(tmp_path, catalogue, "exceptions:\n  - rules: [command-not-found]\n", "--format", "json")
    by_list = json.loads(listed)["suppressed"]

    def strip(found: list[dict]) -> list[dict]:
        return [{k: v for k, v in f.items() if k not in ("evidence", "location")} for f in found]

    assert strip(by_annotation) == strip(by_list) and len(by_list) == 1
    assert by_annotation[0]["evidence"]["exempted_by"] == "canrun.io/skip=command-not-found"
