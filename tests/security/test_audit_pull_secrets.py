"""``canrun audit --use-pull-secrets``: private images read with each workload's own pull secrets, opt-in.

Real registries that require credentials (htpasswd Basic), the secrets in the API stand-in.  By default the
audit asks the API for no Secret at all; with the flag each workload's namespace's secrets are used (a
secret of the same name elsewhere, with the wrong password, does not open the image), a namespace whose
secrets are forbidden is judged without them and said so once, and no credential reaches any output.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from canrun.cli import main
from tests.audit.conftest import deployment_chain
from tests.security.conftest import AuthRegistries, assert_no_secrets, captured_logs
from tests.support.kubeapi import KubeAPIStandIn

pytestmark = pytest.mark.registry


@pytest.fixture
def api(tmp_path: Path, auth_registries: AuthRegistries) -> Iterator[KubeAPIStandIn]:
    with KubeAPIStandIn(tmp_path / "kubeapi") as stand_in:
        image = auth_registries.ref("basic", "whiteout")  # its entrypoint is deleted in its top layer
        for ns in ("tenant", "other"):
            spec = {"imagePullSecrets": [{"name": "regcred"}], "containers": [{"name": "app", "image": image}]}
            for obj in deployment_chain("web", ns, spec, replicas=1, old_revisions=0):
                stand_in.add(obj)
        stand_in.add(auth_registries.pull_secret("regcred", "tenant"))
        other = auth_registries.pull_secret("regcred", "other")
        wrong = AuthRegistries(auth_registries.basic, auth_registries.token, auth_registries.tokens, "not-the-pw")
        other["data"] = wrong.pull_secret("regcred", "other")["data"]
        stand_in.add(other)
        yield stand_in


def audit(api: KubeAPIStandIn, auth_registries: AuthRegistries, *flags: str) -> tuple[int, dict[str, Any], str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["audit", "--kubeconfig", str(api.kubeconfig_path), "--insecure-registry",
                 auth_registries.basic.host, "--no-cache", "--format", "json", *flags], stdout=out, stderr=err)
    return code, json.loads(out.getvalue()), err.getvalue()


def rules_by_namespace(doc: dict[str, Any]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for f in doc["findings"]:
        found.setdefault(f["resource"]["namespace"], set()).add(f["rule"])
    return found


def test_by_default_no_secret_is_read(api: KubeAPIStandIn, auth_registries: AuthRegistries) -> None:
    code, doc, _ = audit(api, auth_registries)
    assert code == 0
    assert rules_by_namespace(doc) == {"tenant": {"image-unresolvable"}, "other": {"image-unresolvable"}}
    assert not [r for r in api.request_log if "/secrets" in r.path or "/serviceaccounts" in r.path]


def test_with_the_flag_each_workload_uses_its_own_namespaces_secret(api: KubeAPIStandIn,
                                                                   auth_registries: AuthRegistries) -> None:
    with captured_logs() as logs:
        code, doc, err = audit(api, auth_registries, "--use-pull-secrets")
    assert code == 1, err
    found = rules_by_namespace(doc)
    assert "command-not-found" in found["tenant"] and "image-unresolvable" not in found["tenant"]
    assert found["other"] == {"image-unresolvable"}  # same secret name, wrong password: not opened
    reads = {r.path for r in api.request_log if "/secrets" in r.path}
    assert reads == {"/api/v1/namespaces/tenant/secrets/regcred", "/api/v1/namespaces/other/secrets/regcred"}
    secrets_ = auth_registries.secrets()
    for text, where in ((json.dumps(doc), "the report"), (err, "stderr"), (logs.getvalue(), "the logs")):
        assert_no_secrets(text, secrets_, where)


def test_forbidden_secrets_are_said_once_and_the_audit_goes_on(api: KubeAPIStandIn,
                                                              auth_registries: AuthRegistries) -> None:
    api.fail("GET", r"/namespaces/other/secrets/", 403, times=None)
    code, doc, err = audit(api, auth_registries, "--use-pull-secrets")
    assert code == 1
    assert rules_by_namespace(doc)["other"] == {"image-unresolvable"}
    lines = [line for line in err.splitlines() if "pull secrets" in line]
    assert len(lines) == 1 and lines[0].startswith("canrun: pull secrets of namespace other not used: forbidden")


def test_a_dump_cannot_use_pull_secrets(tmp_path: Path) -> None:
    dump = tmp_path / "dump.yaml"
    dump.write_text("apiVersion: v1\nkind: List\nitems: []\n")
    err = io.StringIO()
    assert main(["audit", "-f", str(dump), "--use-pull-secrets"], stdout=io.StringIO(), stderr=err) == 2
    assert "--use-pull-secrets reads Secrets from a cluster" in err.getvalue()
