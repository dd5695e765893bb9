"""Credentials go only to the registry they belong to: not to a host a registry redirects blob reads to, not to
another host of the docker config, and to a token realm on another host only what docker itself sends.

What docker sends a token realm (distribution's registry/client/auth, used by docker pull): the credentials
stored for the *registry* host, as HTTP Basic on ``GET <realm>?account=<user>&scope=repository:<repo>:pull
&service=<service>`` (or, with an identity token, a ``POST`` of ``grant_type=refresh_token``); nothing
stored for the realm's own host.  canrun does the same, and refuses to send them over plain HTTP when the
registry itself is HTTPS (docker does not refuse).  The registry then only ever sees ``Bearer``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from canrun import cli
from tests.security.conftest import (AuthRegistries, HeaderRecorder, RedirectingProxy, assert_no_secrets, b64,
                                     docker_config_json, second_loopback)

pytestmark = pytest.mark.registry

OTHER_USER, OTHER_PASSWORD = "bob", "bobs-own-pw-7f3a9c"


def check(pod_image: str, config: Path, tmp_path: Path, *insecure: str) -> tuple[int, str, str]:
    pod = tmp_path / "pod.yaml"
    pod.write_text(f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n"
                   f"    - name: app\n      image: {pod_image}\n")
    out, err = io.StringIO(), io.StringIO()
    args = ["check", str(pod), "--format", "json", "--docker-config", str(config), "--no-cache"]
    for host in insecure:
        args += ["--insecure-registry", host]
    code = cli.main(args, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(params=["other-host", "other-port"])
def redirect_setup(request: pytest.FixtureRequest,
                   auth_registries: AuthRegistries) -> Iterator[tuple[RedirectingProxy, HeaderRecorder]]:
    listen = second_loopback() if request.param == "other-host" else "127.0.0.1"
    recorder = HeaderRecorder(listen, auth_registries.basic.blob_path)
    proxy = RedirectingProxy(auth_registries.basic.host,
                             lambda digest: f"http://{recorder.host}/storage/{digest}?X-Signature=abc")
    try:
        yield proxy, recorder
    finally:
        proxy.stop()
        recorder.stop()


def test_blob_redirects_to_another_host_carry_no_credentials(redirect_setup: tuple[RedirectingProxy, HeaderRecorder],
                                                             auth_registries: AuthRegistries,
                                                             tmp_path: Path) -> None:
    proxy, recorder = redirect_setup
    regs = auth_registries
    # the docker config has credentials for both hosts: neither set may reach the redirect target
    config = tmp_path / "config.json"
    config.write_text(json.dumps(docker_config_json({proxy.host: (regs.username, regs.password),
                                                     recorder.host: (OTHER_USER, OTHER_PASSWORD)})))
    code, out, err = check(f"{proxy.host}/private/whiteout:v1", config, tmp_path, proxy.host, recorder.host)

    report = json.loads(out)
    assert code == 1, err
    assert {f["rule"] for f in report["findings"]} == {"command-not-found"}, report["findings"]
    blob_reads = [r for r in recorder.requests if r.method == "GET"]
    assert len(blob_reads) >= 2, "config and layers were read through the redirect"
    assert all("authorization" not in r.headers for r in recorder.requests), recorder.requests
    assert all(OTHER_PASSWORD not in str(r.headers) and regs.password not in str(r.headers)
               for r in recorder.requests)
    # the registry host got its own credentials, and never those stored for the other host
    sent = {r.headers.get("authorization") for r in proxy.requests} - {None}
    assert sent == {"Basic " + regs.auth_string}
    assert_no_secrets(out + err, {**regs.secrets(), "other": OTHER_PASSWORD}, "canrun check output")


def test_token_realm_on_another_host_gets_what_docker_sends(auth_registries: AuthRegistries,
                                                            tmp_path: Path) -> None:
    regs = auth_registries
    realm_host = regs.tokens.stub.host
    proxy = RedirectingProxy(regs.token.host)  # records what the registry itself receives
    try:
        config = tmp_path / "config.json"
        config.write_text(json.dumps(docker_config_json({proxy.host: (regs.username, regs.password),
                                                         realm_host: (OTHER_USER, OTHER_PASSWORD)})))
        before = len(regs.tokens.stub.requests)
        code, out, err = check(f"{proxy.host}/private/whiteout:v1", config, tmp_path, proxy.host)
    finally:
        proxy.stop()
    assert code == 1 and "command-not-found" in out, err

    asked = regs.tokens.stub.requests[before:]
    assert asked, "the token realm was asked"
    for req in asked:
        query = parse_qs(urlsplit(req.path).query)
        assert req.method == "GET"
        assert req.headers.get("authorization") == "Basic " + regs.auth_string  # the registry's, not bob's
        assert query["account"] == [regs.username]
        assert query["scope"] == ["repository:private/whiteout:pull"]
        assert query["service"] == ["canrun-test-registry"]
        assert set(query) == {"account", "scope", "service"}
        assert OTHER_PASSWORD not in str(req.headers) and b64(f"{OTHER_USER}:{OTHER_PASSWORD}") not in str(req.headers)
    to_registry = [r.headers.get("authorization", "") for r in proxy.requests]
    assert any(a.startswith("Bearer ") for a in to_registry)
    assert not any(a.startswith("Basic ") for a in to_registry), "the registry must only ever see the token"
