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
        (["check", "-f", "-", "--snapshotter", "zfs"], "invalid choice"),
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
    assert err.startswith("canrun: ") and not err.startswith("canrun: canrun")  # one prefix, said once


def test_help_and_version_exit_0() -> None:
    code, out, _ = run("--help")
    assert code == 0 and "check" in out and "inspect" in out
    code, out, _ = run("--version")
    assert code == 0 and out.startswith("canrun ")


def test_no_arguments_print_the_help() -> None:
    code, out, err = run()
    assert code == 0 and out.startswith("usage: canrun") and "completion" in out and not err


def test_version_is_the_package_metadata_and_the_commit_from_a_checkout() -> None:
    from importlib import metadata
    from pathlib import Path

    import canrun

    assert canrun.__version__ == metadata.version("canrun")
    code, out, _ = run("--version")
    root = Path(canrun.__file__).resolve().parents[1]
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    assert out.startswith(f"canrun {canrun.__version__} (commit {commit}")


@pytest.mark.parametrize("shell, syntax_check", [("bash", ["bash", "-n"]), ("zsh", None), ("fish", None)])
def test_completion_scripts_name_every_command_and_flag(shell: str, syntax_check: list[str] | None,
                                                        tmp_path) -> None:
    code, out, err = run("completion", shell)
    assert code == 0, err
    for word in ("check", "inspect", "audit", "serve", "--platform", "--config", "--insecure-registry",
                 "--format"):
        assert word.lstrip("-") in out, word
    if syntax_check:
        script = tmp_path / f"canrun.{shell}"
        script.write_text(out)
        assert subprocess.run([*syntax_check, str(script)], capture_output=True).returncode == 0


def test_bash_completion_completes_subcommands_and_choices(tmp_path) -> None:
    code, out, _ = run("completion", "bash")
    script = tmp_path / "c.bash"
    script.write_text(out)

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        probe = (f'source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _canrun; '
                 'printf "%s\\n" "${COMPREPLY[@]}"')
        return subprocess.run(["bash", "-c", probe], capture_output=True, text=True).stdout.split()

    assert "inspect" in complete("canrun", "ins")
    assert complete("canrun", "check", "--format", "sa") == ["sarif"]
    assert "--platform" in complete("canrun", "serve", "--pla")


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


def test_explain_prints_the_rule_page_shipped_in_the_package() -> None:
    from canrun.findings import RULES

    code, out, err = run("explain", "command-not-found")
    assert code == 0, err
    assert out == RULES["command-not-found"].page
    assert out.startswith("# `command-not-found`") and "## How to fix" in out
    code, out, _ = run("explain")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == list(RULES)
    code, out, err = run("explain", "command-not-fuond")
    assert code == 2 and "no rule 'command-not-fuond'" in err and "command-not-found" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
