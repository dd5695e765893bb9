"""The CLI's contract for bad input: exit 2, one clear line on stderr, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "canrun", *argv], input=stdin, capture_output=True, text=True,
                          timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["check"], "-f/--filename"),
        (["check", "-f", "/nonexistent/deploy.yaml"], "no such file or directory"),
        (["check", "-f", "-", "--platform", "linux/"], "invalid platform 'linux/'"),
        (["check", "-f", "-", "--containerd-version", "latest"], "invalid containerd version 'latest'"),
        (["check", "-f", "-", "--runtime", "podman"], "invalid choice"),
        (["check", "-f", "-", "--format", "xml"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv: list[str], message: str) -> None:
    code, out, err = run(*argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1


def test_help_and_version_exit_0() -> None:
    code, out, _ = run("--help")
    assert code == 0 and "check" in out and "inspect" in out
    code, out, _ = run("--version")
    assert code == 0 and out.startswith("canrun ")


def test_empty_input_has_nothing_to_judge() -> None:
    code, stdout, stderr = run("check", "-f", "-", "--no-cache", stdin="")
    assert code == 0
    assert "0 errors, 0 warnings in 0 workloads, 0 images checked" in stdout
    assert "the default; pass --platform" in stdout


def test_malformed_yaml_on_stdin_is_named_and_exits_2() -> None:
    code, stdout, stderr = run("check", "-f", "-", "--no-cache", stdin="kind: Pod\nmetadata: [unclosed\n")
    assert code == 2
    assert "Traceback" not in stdout + stderr
    assert "could not be read" in stderr


def test_check_loads_neither_the_webhook_nor_the_audit_nor_the_config_schema(tmp_path) -> None:
    """`canrun check` in CI pays only for what it uses: no web server, no Kubernetes client, no cryptography,
    and no pydantic when there is no .canrun.yaml (each is tens of milliseconds of start-up on every run)."""
    manifest = tmp_path / "cm.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n")
    probe = ("import sys; from canrun.cli import main; code = main(['check', '-f', sys.argv[1], '--no-cache']); "
             "heavy = ('fastapi', 'uvicorn', 'kubernetes', 'cryptography', 'pydantic'); "
             "print(code, sorted(m for m in heavy if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe, str(manifest)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.stdout.strip().splitlines()[-1] == "0 []", proc.stdout + proc.stderr
    (tmp_path / ".canrun.yaml").write_text("strict: true\n")
    proc = subprocess.run([sys.executable, "-c", probe, str(manifest)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.stdout.strip().splitlines()[-1] == "0 ['pydantic']", proc.stdout + proc.stderr
