"""``canrun check --docker-config`` and ``canrun inspect`` against registries that require credentials, run as
real processes: every output (text, json, sarif, -v, stderr) is searched for the password, the base64 auth
string and bearer tokens, with the right credentials and with wrong ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.security.conftest import AuthRegistries, assert_no_secrets, docker_config_json

pytestmark = pytest.mark.registry

ROOT = Path(__file__).resolve().parents[2]


def canrun(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_CONFIG": str(home / "no-docker-config"), "HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "canrun", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)


def write_config(path: Path, regs: AuthRegistries, password: str) -> Path:
    path.write_text(json.dumps(docker_config_json({regs.basic.host: (regs.username, password),
                                                    regs.token.host: (regs.username, password)})))
    return path


def manifest(path: Path, images: list[str]) -> Path:
    containers = "".join(f"\n    - name: c{i}\n      image: {image}" for i, image in enumerate(images))
    path.write_text(f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:{containers}\n")
    return path


@pytest.mark.parametrize("right", [True, False], ids=["right-password", "wrong-password"])
def test_check_and_inspect_never_print_credentials(right: bool, auth_registries: AuthRegistries,
                                                   tmp_path: Path) -> None:
    regs = auth_registries
    password = regs.password if right else "wrong-" + regs.password[::-1]
    config = write_config(tmp_path / "config.json", regs, password)
    pod = manifest(tmp_path / "pod.yaml", [regs.ref("basic", "whiteout"), regs.ref("token", "whiteout")])
    common = ["--docker-config", str(config), "--cache-dir", str(tmp_path / "cache"),
              "--insecure-registry", regs.basic.host, "--insecure-registry", regs.token.host]
    runs = {}
    for fmt in ("text", "json", "sarif"):
        runs[fmt] = canrun("check", str(pod), "--format", fmt, *common, home=tmp_path)
    runs["text -v"] = canrun("check", str(pod), "-v", *common, home=tmp_path)
    runs["inspect"] = canrun("inspect", regs.ref("token", "whiteout"), *common, home=tmp_path)
    runs["inspect json"] = canrun("inspect", regs.ref("basic", "whiteout"), "--format", "json", *common,
                                  home=tmp_path)

    if right:  # the credentials worked: the image was judged, in every format
        assert runs["text"].returncode == 1, runs["text"].stderr
        assert runs["text"].stdout.count("command-not-found") >= 1
        assert "image-unresolvable" not in runs["json"].stdout
        assert runs["inspect"].returncode == 1 and "/app/server" in runs["inspect"].stdout  # judged: it fails
    else:  # refused: said clearly, without the credentials
        assert "image-unresolvable" in runs["json"].stdout
        assert "with the configured credentials" in runs["json"].stdout
        assert runs["inspect"].returncode == 2
        assert "refused access" in runs["inspect"].stderr or "token server" in runs["inspect"].stderr
    secrets_ = {**regs.secrets(), "given-password": password,
                "given-auth": docker_config_json({"h": (regs.username, password)})["auths"]["h"]["auth"]}
    for name, proc in runs.items():
        assert "Traceback" not in proc.stderr, proc.stderr
        assert_no_secrets(proc.stdout, secrets_, f"canrun {name} stdout")
        assert_no_secrets(proc.stderr, secrets_, f"canrun {name} stderr")
