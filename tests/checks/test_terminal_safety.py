"""Escape sequences from an image never reach the user's terminal, whatever the format.

The image is the adversary's: its file names, symlink targets and ``#!`` lines are printed by
``canrun inspect`` and quoted in every finding. A real image in the local registry carries an OSC title
change, a screen clear and a right-to-left override; no output may contain them raw.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator

import pytest

from canrun.cli import main
from canrun.terminal import printable
from tests.support import images
from tests.support.registry import RunningRegistry

pytestmark = pytest.mark.registry

ESC, BEL, RLO = "\x1b", "\x07", "\u202e"
TITLE = f"{ESC}]0;pwned{BEL}"
CLEAR = f"{ESC}[2J"


def test_printable_escapes_controls_and_keeps_text() -> None:
    assert printable("/usr/bin/env python3") == "/usr/bin/env python3"
    assert printable(f"/bin/sh{CLEAR}\r") == "/bin/sh\\x1b[2J\\x0d"
    assert printable(f"a{RLO}b") == "a\\u202eb" and printable("héllo ✓") == "héllo ✓"


@pytest.fixture(scope="module")
def hostile(local_registry: RunningRegistry) -> Iterator[str]:
    recipe = images.Image(
        "terminal-escapes",
        (images.busybox_root(images.HOST_BUSYBOX),
         images.RawLayer((images.TarEntry("app/", tarfile.DIRTYPE, mode=0o755),
                          images.TarEntry("app/run", tarfile.SYMTYPE, link=f"{TITLE}missing{CLEAR}"),
                          images.TarEntry(f"app/tool{RLO}gnp.sh", data=f"#!/bin/{TITLE}bash\n".encode(),
                                          mode=0o755)))),
        images.Config(entrypoint=("/app/run",)))
    catalogue = images.publish(local_registry.host, local_registry.blob_path, recipes=[recipe],
                               names={"terminal-escapes": "hostile/escapes:1"})
    yield catalogue.ref("terminal-escapes")


def _run(*argv: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    main(list(argv), stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def _no_raw_controls(text: str) -> None:
    for raw in (ESC, BEL, RLO):
        assert raw not in text, f"{raw!r} reached the output: {text[:500]!r}"


def test_inspect_prints_the_image_escaped(hostile: str, local_registry: RunningRegistry) -> None:
    out = _run("inspect", hostile, "--insecure-registry", local_registry.host, "--no-cache",
               "--path", "/app/run", "--path", f"/app/tool{RLO}gnp.sh")
    _no_raw_controls(out)
    assert "\\x1b]0;pwned\\x07missing\\x1b[2J" in out  # the symlink target, readable and inert
    assert "\\u202e" in out


@pytest.mark.parametrize("fmt", ["text", "json", "sarif", "github", "junit", "markdown"])
def test_every_check_format_is_inert(hostile: str, local_registry: RunningRegistry, tmp_path, fmt: str) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {
        "containers": [{"name": "run", "image": hostile},
                       {"name": "tool", "image": hostile, "command": [f"/app/tool{RLO}gnp.sh"]}]}}))
    out = _run("check", "-f", str(manifest), "--insecure-registry", local_registry.host, "--no-cache",
               "--format", fmt)
    _no_raw_controls(out)
    assert "command-not-found" in out and "interpreter-not-found" in out
