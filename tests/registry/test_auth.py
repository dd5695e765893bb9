"""Where credentials come from, which host gets them, and that they never show."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from pathlib import Path

import pytest

from canrun.errors import UsageError
from canrun.registry.auth import (Credential, Keychain, current_keychain, normalize_host, parse_challenges,
                                  use_keychain)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("key, host", [
    ("https://index.docker.io/v1/", "docker.io"),
    ("index.docker.io", "docker.io"),
    ("registry-1.docker.io", "docker.io"),
    ("docker.io", "docker.io"),
    ("https://ghcr.io", "ghcr.io"),
    ("http://Reg.Example.com:5000/v2/", "reg.example.com:5000"),
    ("reg.example.com:5000", "reg.example.com:5000"),
])
def test_keys_are_matched_the_way_docker_does(key: str, host: str) -> None:
    assert normalize_host(key) == host


def test_docker_config_auths_in_every_shape() -> None:
    chain = Keychain.from_docker_config({"auths": {
        "https://index.docker.io/v1/": {"auth": b64("hubuser:hubpass")},
        "ghcr.io": {"username": "gh", "password": "ghp_secret"},
        "quay.io": {"auth": b64("robot:"), "identitytoken": "refresh-me"},
        "broken.example": {"auth": "%%%not base64"},
        "nocolon.example": {"auth": b64("justauser")},
    }})
    assert chain.lookup("docker.io") == Credential("hubuser", "hubpass")
    assert chain.lookup("registry-1.docker.io") == Credential("hubuser", "hubpass")
    assert chain.lookup("ghcr.io") == Credential("gh", "ghp_secret")
    assert chain.lookup("quay.io") == Credential("robot", identity_token="refresh-me")
    assert chain.lookup("broken.example") is None
    assert chain.lookup("nocolon.example") is None
    # only the host the credential was stored for
    assert chain.lookup("ghcr.io.evil.example") is None
    assert chain.lookup("evil.example") is None


def test_pull_secret_shapes_dockerconfigjson_and_legacy_dockercfg() -> None:
    modern = {"auths": {"reg.example.com": {"auth": b64("u1:p1")}}}
    legacy = {"https://legacy.example.com": {"auth": b64("u2:p2"), "email": "x@example.com"}}
    a = Keychain.from_pull_secret({".dockerconfigjson": b64(json.dumps(modern))})
    b = Keychain.from_pull_secret({".dockercfg": b64(json.dumps(legacy))})
    assert a.lookup("reg.example.com") == Credential("u1", "p1")
    assert b.lookup("legacy.example.com") == Credential("u2", "p2")
    with pytest.raises(UsageError, match="neither"):
        Keychain.from_pull_secret({"token": b64("x")})
    with pytest.raises(UsageError, match="base64"):
        Keychain.from_pull_secret({".dockerconfigjson": "***"})


def test_pull_secrets_cannot_name_credential_helpers() -> None:
    secret = {"auths": {}, "credHelpers": {"reg.example.com": "evil"}, "credsStore": "evil"}
    chain = Keychain.from_pull_secret({".dockerconfigjson": b64(json.dumps(secret))})
    assert not chain.needs_subprocess
    assert chain.lookup("reg.example.com") is None


def test_merge_prefers_the_first_keychain() -> None:
    request = Keychain({"ghcr.io": Credential("pod", "podpass")})
    operator = Keychain({"ghcr.io": Credential("op", "oppass"), "quay.io": Credential("op", "q")})
    merged = request.merge(operator)
    assert merged.lookup("ghcr.io") == Credential("pod", "podpass")
    assert merged.lookup("quay.io") == Credential("op", "q")


def test_credentials_never_show_in_repr_or_str() -> None:
    cred = Credential("alice", "hunter2-secret")
    token = Credential("bob", identity_token="tok-secret")
    chain = Keychain({"ghcr.io": cred, "quay.io": token})
    for text in (repr(cred), str(cred), repr(token), repr(chain), str(chain)):
        assert "hunter2-secret" not in text and "tok-secret" not in text
    assert "alice" in repr(cred) and "<redacted>" in repr(cred)


def test_config_file_errors_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read docker config"):
        Keychain.from_docker_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(UsageError, match="not valid JSON"):
        Keychain.from_docker_config(bad)


def _helper(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


@pytest.fixture
def helper_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def test_credential_helpers_and_creds_store_run_like_docker(helper_path: Path, tmp_path: Path) -> None:
    log = tmp_path / "asked"
    # docker's protocol: `get` on argv, the server URL on stdin, JSON on stdout
    _helper(helper_path, "ecr", f'read url; echo "$1 $url" >> {log}; '
            'echo \'{"ServerURL":"x","Username":"AWS","Secret":"ecr-pass"}\'\n')
    _helper(helper_path, "store", f'read url; echo "$1 $url" >> {log}; '
            'echo \'{"ServerURL":"x","Username":"<token>","Secret":"id-token"}\'\n')
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {"ghcr.io": {"auth": b64("gh:pw")}},
                                  "credHelpers": {"123.dkr.ecr.us-east-1.amazonaws.com": "ecr"},
                                  "credsStore": "store"}))
    chain = Keychain.from_docker_config(config)
    assert chain.lookup("123.dkr.ecr.us-east-1.amazonaws.com") == Credential("AWS", "ecr-pass")
    assert chain.lookup("docker.io") == Credential(identity_token="id-token")
    assert chain.lookup("ghcr.io") == Credential("gh", "pw")  # auths win over the store
    chain.lookup("docker.io")  # cached: the helper is not asked again
    asked = log.read_text().splitlines()
    assert asked == ["get 123.dkr.ecr.us-east-1.amazonaws.com", "get https://index.docker.io/v1/"]


def test_failing_missing_or_hanging_helpers_give_no_credentials(helper_path: Path, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    _helper(helper_path, "fails", 'echo "credentials not found in native keychain" >&2; exit 1\n')
    _helper(helper_path, "garbage", "echo 'not json'\n")
    _helper(helper_path, "hangs", "exec sleep 30\n")
    config = {"credHelpers": {"a.example": "fails", "b.example": "garbage", "c.example": "hangs",
                              "d.example": "not-installed"}}
    chain = Keychain.from_docker_config(config, helpers=True)
    chain.helper_timeout = 0.5
    with caplog.at_level(logging.DEBUG, logger="canrun.registry"):
        for host in ("a.example", "b.example", "c.example", "d.example"):
            assert chain.lookup(host) is None
    text = caplog.text
    assert "found no credentials" in text and "timed out" in text and "not installed" in text


def test_use_keychain_is_scoped_to_the_context_and_its_tasks() -> None:
    chain = Keychain({"ghcr.io": Credential("pod", "p")})

    async def inner() -> Keychain | None:
        return current_keychain()

    async def main() -> tuple[Keychain | None, Keychain | None]:
        with use_keychain(chain):
            seen = await asyncio.create_task(inner())
        return seen, current_keychain()

    seen, after = asyncio.run(main())
    assert seen is chain and after is None


@pytest.mark.parametrize("header, expected", [
    ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"',
     [("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                  "scope": "repository:library/nginx:pull"})]),
    ('bearer  Realm = "https://a/t" , Service=svc, scope="repository:a:pull,push"',
     [("bearer", {"realm": "https://a/t", "service": "svc", "scope": "repository:a:pull,push"})]),
    ('Basic realm="Registry Realm"', [("basic", {"realm": "Registry Realm"})]),
    ('Basic realm="x", Bearer realm="https://t/token",error="insufficient_scope"',
     [("basic", {"realm": "x"}), ("bearer", {"realm": "https://t/token", "error": "insufficient_scope"})]),
    ('Bearer realm="quote \\" inside"', [("bearer", {"realm": 'quote " inside'})]),
    ('Negotiate abc123==, Basic realm="r"', [("negotiate", {}), ("basic", {"realm": "r"})]),
    ("", []),
    ('Bearer realm="unterminated', [("bearer", {"realm": "unterminated"})]),
])
def test_www_authenticate_parsing(header: str, expected: list[tuple[str, dict[str, str]]]) -> None:
    assert [(c.scheme, c.params) for c in parse_challenges(header)] == expected
