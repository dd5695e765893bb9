"""The Dockerfile, read (no docker engine runs in CI): the properties the manifests and docs rely on."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.+)$", DOCKERFILE, re.MULTILINE)]


def test_entrypoint_is_exec_form_and_absolute() -> None:
    [entry] = instructions("ENTRYPOINT")
    argv = json.loads(entry)  # exec form: a JSON array, no shell in between
    assert argv == ["/usr/local/bin/canrun", "serve"]


def test_runs_as_numeric_non_root_user() -> None:
    users = instructions("USER")
    assert users and re.fullmatch(r"65532(:65532)?", users[-1])
    # the manifests' runAsUser must be the image's user
    deploy = (ROOT / "manifests" / "base" / "deployment.yaml").read_text()
    assert "runAsUser: 65532" in deploy


def test_multi_stage_from_a_pinned_slim_base() -> None:
    froms = instructions("FROM")
    assert len(froms) >= 2, "multi-stage build"
    [arg] = [a for a in instructions("ARG") if a.startswith("PYTHON_IMAGE=")]
    image = arg.split("=", 1)[1]
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-bookworm(@sha256:[0-9a-f]{64})?", image)
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)


def test_only_the_package_goes_into_the_build_context() -> None:
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*"
    for kept in ("!requirements.txt", "!pyproject.toml", "!canrun/"):
        assert kept in ignore
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.MULTILINE):
        for src in copied.split():
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
