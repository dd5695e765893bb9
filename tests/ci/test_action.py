"""The GitHub Action (action.yml) and the pre-commit hook definition, run the way their hosts run them.

The action's check step is a bash script; it is executed here with bash, the inputs in the environment as
GitHub passes them, and a stand-in ``canrun`` on PATH that records its argv, so what the action would run
is checked exactly (including that inputs are never evaluated as shell).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())

STUB = """#!/bin/sh
for a in "$@"; do printf '%s\\t' "$a"; done >> "$CANRUN_STUB_LOG"
echo >> "$CANRUN_STUB_LOG"
exit "${CANRUN_STUB_EXIT:-0}"
"""


def _step(step_id: str) -> dict:  # type: ignore[type-arg]
    return next(s for s in ACTION["runs"]["steps"] if s.get("id") == step_id)


def run_action(tmp_path: Path, exit_status: int = 0, **inputs: str) -> tuple[int, list[list[str]], dict[str, str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "canrun"
    stub.write_text(STUB)
    stub.chmod(0o755)
    log, outputs = tmp_path / "argv.log", tmp_path / "github_output"
    log.write_text("")
    outputs.write_text("")
    step = _step("check")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "GITHUB_OUTPUT": str(outputs),
           "CANRUN_STUB_LOG": str(log), "CANRUN_STUB_EXIT": str(exit_status)}
    defaults = {name: str(spec.get("default", "")) for name, spec in ACTION["inputs"].items()}
    for var, expr in step["env"].items():
        name = expr.removeprefix("${{ inputs.").removesuffix(" }}")
        env[var] = inputs.get(name.replace("-", "_"), defaults[name])
    proc = subprocess.run(["bash", "-e", "-c", step["run"]], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    calls = [line.rstrip("\t").split("\t") for line in log.read_text().splitlines()]
    outs = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    return proc.returncode, calls, outs


def test_action_runs_check_with_the_inputs_and_annotates(tmp_path: Path) -> None:
    code, calls, outs = run_action(tmp_path, files="k8s/ more\nthird", platforms="linux/amd64,linux/arm64",
                                   strict="true", args="--verbose --insecure-registry r.local:5000")
    assert code == 0
    common = ["check", "-f", "k8s/", "-f", "more", "-f", "third", "--platform", "linux/amd64,linux/arm64",
              "--strict", "--verbose", "--insecure-registry", "r.local:5000"]
    assert calls == [common + ["--format", "sarif", "--output", "canrun.sarif"], common + ["--format", "github"]]
    assert outs == {"report": "canrun.sarif", "exit-code": "0"}


def test_action_defaults(tmp_path: Path) -> None:
    code, calls, _ = run_action(tmp_path, annotations="false")
    assert calls == [["check", "-f", ".", "--format", "sarif", "--output", "canrun.sarif"]]


@pytest.mark.parametrize("status, fail, step_code", [(1, "true", 1), (1, "false", 0), (2, "false", 2)])
def test_action_exit_status(tmp_path: Path, status: int, fail: str, step_code: int) -> None:
    code, calls, outs = run_action(tmp_path, exit_status=status, fail_on_findings=fail)
    assert code == step_code
    assert outs["exit-code"] == str(status)
    assert len(calls) == (1 if status == 2 else 2)  # no annotations for unreadable input


def test_action_inputs_are_not_shell(tmp_path: Path) -> None:
    code, calls, _ = run_action(tmp_path, files="$(touch pwned) `touch pwned2`", args="; touch pwned3",
                                annotations="false")
    assert not list(tmp_path.glob("pwned*"))
    assert calls[0][:5] == ["check", "-f", "$(touch", "-f", "pwned)"]


def test_action_installs_from_its_own_source_by_default() -> None:
    step = next(s for s in ACTION["runs"]["steps"] if s.get("name") == "Install canrun")
    assert step["env"]["ACTION_PATH"] == "${{ github.action_path }}"
    assert '"$ACTION_PATH"' in step["run"] and "${{" not in step["run"]
    assert ACTION["runs"]["using"] == "composite"
    assert (ROOT / "pyproject.toml").is_file()  # what `pip install $ACTION_PATH` builds


def test_pre_commit_hook_runs_canrun_check_once_over_all_files() -> None:
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "canrun-check" and hook["entry"] == "canrun check"
    assert hook["language"] == "python" and hook["require_serial"] is True and hook["pass_filenames"] is True
