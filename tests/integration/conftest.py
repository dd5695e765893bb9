"""Helpers for end-to-end tests: run the real ``canrun`` CLI in a subprocess, as a user or CI job would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOTH = "linux/amd64,linux/arm64"


@dataclass
class Run:
    args: list[str]
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        try:
            return json.loads(self.stdout)
        except ValueError as exc:
            raise AssertionError(f"not JSON (exit {self.code}): {self.stdout[-1500:]}\nstderr: {self.stderr[-1500:]}") \
                from exc

    @property
    def findings(self) -> list[dict[str, Any]]:
        return list(self.json["findings"])

    def by_name(self, name: str) -> list[dict[str, Any]]:
        return [f for f in self.findings if f["resource"] and f["resource"]["name"] == name]

    def __str__(self) -> str:
        return f"canrun {' '.join(self.args)} -> {self.code}\n{self.stdout[-3000:]}\nstderr: {self.stderr[-3000:]}"


def canrun(*args: str, cache_dir: Path | None = None, stdin: str | None = None, timeout: float = 180,
           env: dict[str, str] | None = None) -> Run:
    """``python -m canrun ARGS`` with its own cache directory; never inherits the user's cache."""
    full_env = {**os.environ, **(env or {}), "NO_COLOR": "1"}
    if cache_dir is not None:
        full_env["CANRUN_CACHE_DIR"] = str(cache_dir)
    proc = subprocess.run([sys.executable, "-m", "canrun", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=ROOT)
    return Run(list(args), proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def severities(findings: list[dict[str, Any]]) -> set[str]:
    return {f["severity"] for f in findings}


def problems(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Findings a user must act on (errors and warnings; info notes excluded)."""
    return [f for f in findings if f["severity"] in ("error", "warning")]
