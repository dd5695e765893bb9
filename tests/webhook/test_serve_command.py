"""``canrun serve`` as a user runs it on a laptop: a subprocess, a generated certificate, JSON logs."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.images import Catalogue
from tests.support.registry import free_port
from tests.webhook.conftest import container, pod, review

pytestmark = pytest.mark.registry


@contextmanager
def _ready_client(proc: subprocess.Popen[bytes], certs: Path, port: int) -> Iterator[httpx.Client]:
    """A client trusting the CA ``canrun serve`` generated, once the server says it is ready (30 s at most)."""
    deadline = time.monotonic() + 30
    while not (certs / "ca.crt").exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.1)
    verify = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=verify, timeout=30) as client:
        while True:
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "canrun serve did not become ready"
            time.sleep(0.1)
        yield client


def test_serve_standalone_with_a_generated_certificate(tmp_path: Path, catalogue: Catalogue) -> None:
    port = free_port()
    certs = tmp_path / "certs"
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "absent-kubeconfig"), "CANRUN_CACHE_DIR": str(tmp_path / "c")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "canrun", "serve", "--host", "127.0.0.1", "--port", str(port), "--cert-dir",
         str(certs), "--platform", "linux/amd64", "--mode", "enforce", "--insecure-registry", catalogue.host],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=Path(__file__).parents[2])
    try:
        with _ready_client(proc, certs, port) as client:
            body = review(pod([container(catalogue.ref("whiteout"), name="server")], name="web"))
            answer = client.post("/validate", json=body).json()["response"]
        assert answer["allowed"] is False and "command-not-found" in answer["status"]["message"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    # uvicorn re-raises the SIGTERM it handled once shut down cleanly
    assert proc.returncode in (0, -signal.SIGTERM), err.decode()[-2000:]
    assert "Application shutdown complete" in err.decode()
    records = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    decision = [r for r in records if r.get("logger") == "canrun.webhook.admission"]
    assert len(decision) == 1
    d = decision[0]
    assert (d["kind"], d["namespace"], d["name"], d["operation"], d["mode"], d["verdict"]) == (
        "Pod", "default", "web", "CREATE", "enforce", "denied")
    assert d["findings"] == ["command-not-found"] and d["uid"] == body["request"]["uid"] and "latency_ms" in d
    assert any("running standalone" in r["msg"] for r in records)


def _serve_args(*flags: str) -> tuple[Any, Any]:
    from canrun.cli import build_parser
    from canrun.settings import settings_for

    args = build_parser().parse_args(["serve", *flags])
    settings = settings_for("serve", args, environ={})
    return settings, settings.webhook


def test_serve_flags_reach_the_engine_and_the_webhook() -> None:
    settings, webhook = _serve_args("--insecure-registry", "reg.local:5000", "--allow-registry-host", "10.0.0.5",
                                    "--allow-registry-host", "mirror.corp", "--blocked-network", "10.96.0.0/12",
                                    "--mode", "audit", "--deadline", "2.5", "--strict", "--platform",
                                    "linux/arm64")
    registry = settings.registry.client_settings()
    assert registry.insecure_hosts == {"reg.local:5000"}
    assert registry.allow_hosts == {"10.0.0.5", "mirror.corp"}
    assert registry.blocked_networks == ("10.96.0.0/12",)
    assert (webhook.default_mode, webhook.deadline, webhook.strict) == ("audit", 2.5, True)
    assert [str(p) for p in settings.nodes.platforms] == ["linux/arm64"]
    assert registry.ssrf_guard  # the webhook's guard is on by default


def test_serve_defaults() -> None:
    settings, webhook = _serve_args()
    assert (webhook.default_mode, webhook.deadline, webhook.strict, webhook.events) == ("warn", 5.0, False, True)
    assert settings.registry.client_settings().blocked_networks == ()


@pytest.mark.parametrize("flags, says", [
    (("--blocked-network", "10.96.0.0/33"), "invalid blocked network"),
    (("--mode", "off"), "invalid choice"),
    (("--deadline", "0"), "--deadline must be between"),
])
def test_bad_serve_flags_are_one_line_errors(flags: tuple[str, ...], says: str) -> None:
    import io

    from canrun.cli import main

    err = io.StringIO()
    assert main(["serve", *flags], stdout=io.StringIO(), stderr=err) == 2
    assert says in err.getvalue() and "Traceback" not in err.getvalue()


def _swap(path: Path, text: str) -> None:
    """Replace the file in one rename, as the kubelet updates a mounted ConfigMap."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_serve_applies_a_changed_config_file_without_a_restart(tmp_path: Path, catalogue: Catalogue) -> None:
    """The ConfigMap changes: the next admission is judged under the new settings; a broken file changes nothing."""
    port = free_port()
    certs = tmp_path / "certs"
    config = tmp_path / "config.yaml"
    config.write_text("rules: {not-verified: off}\n")
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "absent-kubeconfig"), "CANRUN_CACHE_DIR": str(tmp_path / "c")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "canrun", "serve", "--host", "127.0.0.1", "--port", str(port), "--cert-dir",
         str(certs), "--platform", "linux/amd64", "--mode", "enforce", "--insecure-registry", catalogue.host,
         "--config", str(config), "--config-reload-interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=Path(__file__).parents[2])
    body = review(pod([container(catalogue.ref("whiteout"), name="server")], name="web", namespace="legacy"))
    try:
        with _ready_client(proc, certs, port) as client:

            def answer() -> dict[str, Any]:
                return client.post("/validate", json=body).json()["response"]

            assert answer()["allowed"] is False  # command-not-found denies in enforce mode

            _swap(config, "exceptions:\n  - namespace: legacy\n    rules: [command-not-found]\n"
                          "    reason: being rebuilt\n")
            deadline = time.monotonic() + 15
            while (got := answer())["allowed"] is False:
                assert time.monotonic() < deadline, "the new settings were not applied"
                time.sleep(0.1)
            assert any("exempted by exceptions[0] of config.yaml" in w for w in got["warnings"]), got

            _swap(config, "rules: {no-such-rule: off}\n")  # invalid: the running settings stay
            time.sleep(1.0)
            assert answer()["allowed"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    records = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    messages = [r["msg"] for r in records]
    assert any(m.startswith("settings reloaded from") for m in messages), messages
    assert any("not applied" in m and "no-such-rule" in m for m in messages), messages
