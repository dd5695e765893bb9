"""Kubelet credential provider plugins: a real exec plugin, written here, against the htpasswd registry.

The plugin speaks CredentialProviderRequest/Response JSON on stdin/stdout as the kubelet's plugins do,
logs each request's image to a file (so the tests count its runs), and answers the credentials it is
given in its ``env`` by the CredentialProviderConfig — never on its command line, never in canrun's output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from canrun.credential_provider import match_image, parse_duration
from tests.security.conftest import AuthRegistries, assert_no_secrets

pytestmark = pytest.mark.registry
ROOT = Path(__file__).resolve().parents[2]

PLUGIN = """#!{python}
import json, os, sys
request = json.load(sys.stdin)
assert request["kind"] == "CredentialProviderRequest", request
with open(os.environ["PLUGIN_LOG"], "a") as log:
    log.write(request["image"] + "\\n")
host = request["image"].split("/", 1)[0]
json.dump({{"apiVersion": request["apiVersion"], "kind": "CredentialProviderResponse",
           "cacheKeyType": os.environ["CACHE_KEY_TYPE"], "cacheDuration": os.environ.get("CACHE_DURATION", ""),
           "auth": {{host: {{"username": os.environ["PLUGIN_USER"], "password": os.environ["PLUGIN_PASSWORD"]}}}}}},
          sys.stdout)
"""


def _setup(tmp_path: Path, regs: AuthRegistries, *, match: str, cache_key: str = "Registry",
           duration: str = "", password: str | None = None) -> tuple[Path, Path, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    plugin = bin_dir / "test-plugin"
    plugin.write_text(PLUGIN.format(python=sys.executable))
    plugin.chmod(0o755)
    log = tmp_path / "plugin.log"
    config = tmp_path / "credential-providers.yaml"
    config.write_text(yaml.safe_dump({
        "apiVersion": "kubelet.config.k8s.io/v1", "kind": "CredentialProviderConfig",
        "providers": [{"name": "test-plugin", "matchImages": [match], "defaultCacheDuration": "12h",
                       "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                       "env": [{"name": "PLUGIN_LOG", "value": str(log)},
                               {"name": "CACHE_KEY_TYPE", "value": cache_key},
                               {"name": "CACHE_DURATION", "value": duration},
                               {"name": "PLUGIN_USER", "value": regs.username},
                               {"name": "PLUGIN_PASSWORD", "value": password or regs.password}]}]}))
    return config, bin_dir, log


def _pod(tmp_path: Path, images: list[str]) -> Path:
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                    "spec": {"containers": [{"name": f"c{i}", "image": image}
                                                            for i, image in enumerate(images)]}}))
    return path


def _check(tmp_path: Path, pod: Path, config: Path, bin_dir: Path, *more: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "no-docker-config"), "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "canrun", "check", "-f", str(pod), "--no-cache", "--format",
                           "json", "--image-credential-provider-config", str(config),
                           "--image-credential-provider-bin-dir", str(bin_dir), *more],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def _rules(run: subprocess.CompletedProcess[str]) -> set[tuple[str, str]]:
    return {(f["container"], f["rule"]) for f in json.loads(run.stdout)["findings"]}


def test_the_plugin_authenticates_the_pull_and_its_answer_is_cached_per_registry(
        tmp_path: Path, auth_registries: AuthRegistries) -> None:
    regs = auth_registries
    config, bin_dir, log = _setup(tmp_path, regs, match=f"{regs.basic.host}/private")
    pod = _pod(tmp_path, [regs.ref("basic", "whiteout"), regs.ref("basic", "busybox-amd64")])
    run = _check(tmp_path, pod, config, bin_dir, "-v")
    assert run.returncode == 1, run.stderr
    rules = _rules(run)
    assert ("c0", "command-not-found") in rules  # the private image was read and judged
    assert not any(rule == "image-unresolvable" for _, rule in rules)
    # two images of one registry, cacheKeyType Registry: the plugin ran once, for whichever image was read first
    # (the two are resolved concurrently)
    [asked] = log.read_text().splitlines()
    assert asked in {regs.ref("basic", name).rsplit(":", 1)[0] for name in ("whiteout", "busybox-amd64")}
    assert_no_secrets(run.stdout + run.stderr, regs.secrets(), "canrun check's output")


def test_cache_key_image_asks_again_for_another_image(tmp_path: Path, auth_registries: AuthRegistries) -> None:
    regs = auth_registries
    config, bin_dir, log = _setup(tmp_path, regs, match=regs.basic.host, cache_key="Image")
    pod = _pod(tmp_path, [regs.ref("basic", "whiteout"), regs.ref("basic", "busybox-amd64")])
    run = _check(tmp_path, pod, config, bin_dir)
    assert run.returncode == 1, run.stderr
    assert len(log.read_text().splitlines()) == 2


def test_a_provider_that_does_not_match_is_not_run(tmp_path: Path, auth_registries: AuthRegistries) -> None:
    regs = auth_registries
    config, bin_dir, log = _setup(tmp_path, regs, match="*.ecr.example.com")
    run = _check(tmp_path, _pod(tmp_path, [regs.ref("basic", "whiteout")]), config, bin_dir)
    assert run.returncode == 0 and _rules(run) == {("c0", "image-unresolvable")}  # refused without credentials
    assert not log.exists()


def test_wrong_credentials_from_the_plugin_are_a_refusal_never_echoed(
        tmp_path: Path, auth_registries: AuthRegistries) -> None:
    regs = auth_registries
    config, bin_dir, _ = _setup(tmp_path, regs, match=regs.basic.host, password="wrong-" + regs.password)
    run = _check(tmp_path, _pod(tmp_path, [regs.ref("basic", "whiteout")]), config, bin_dir, "-v")
    assert _rules(run) == {("c0", "image-unresolvable")}
    assert "wrong-" not in run.stdout + run.stderr
    assert_no_secrets(run.stdout + run.stderr, regs.secrets(), "canrun check's output")


def test_a_bad_config_is_one_usage_error_with_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"apiVersion": "kubelet.config.k8s.io/v1", "kind": "CredentialProviderConfig",
                                      "providers": [{"name": "absent", "matchImages": [],
                                                     "defaultCacheDuration": "soon", "apiVersion": "v9"}]}))
    (tmp_path / "bin").mkdir()
    run = _check(tmp_path, _pod(tmp_path, ["127.0.0.1:9/x:1"]), config, tmp_path / "bin")
    assert run.returncode == 2
    for part in ("4 problems", "no plugin", "matchImages", "defaultCacheDuration", "apiVersion"):
        assert part in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("pattern, image, matches", [
    ("*.dkr.ecr.*.amazonaws.com", "123.dkr.ecr.eu-west-1.amazonaws.com/app", True),
    ("*.dkr.ecr.*.amazonaws.com", "dkr.ecr.eu-west-1.amazonaws.com/app", False),  # * is one label
    ("registry.io:8080/team", "registry.io:8080/team/app", True),
    ("registry.io:8080/team", "registry.io:8081/team/app", False),
    ("registry.io/team", "registry.io/teamster/app", False),  # a path prefix is whole segments
    ("registry.io", "registry.io:5000/app", True),  # no port in the pattern: any port
])
def test_match_images_as_the_kubelet_matches_them(pattern: str, image: str, matches: bool) -> None:
    assert match_image(pattern, image) is matches


def test_durations() -> None:
    assert parse_duration("12h") == 43200 and parse_duration("1h30m") == 5400 and parse_duration("0") == 0
    with pytest.raises(ValueError):
        parse_duration("soon")
