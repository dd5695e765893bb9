"""``--hosts-dir``: containerd's ``certs.d/<host>/hosts.toml`` files, read with containerd's semantics.

Real files of that format, the real local registry: ``nodes.example:5000`` does not exist, and the
hosts directory says where its images really are, as a node's ``/etc/containerd/certs.d`` would.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from canrun import cli
from canrun.errors import UsageError
from canrun.hosts_dir import load_hosts_dir
from tests.support.images import Catalogue

pytestmark = pytest.mark.registry

UPSTREAM = "nodes.example:5000"
MANIFEST = """\
apiVersion: v1
kind: Pod
metadata:
  name: export
spec:
  containers:
    - name: export
      image: {image}
"""


def _hosts(root: Path, directory: str, text: str) -> Path:
    (root / directory).mkdir(parents=True, exist_ok=True)
    (root / directory / "hosts.toml").write_text(text)
    return root


def _check(tmp_path: Path, hosts_dir: Path, image: str) -> tuple[int, dict, str]:
    path = tmp_path / "pod.yaml"
    path.write_text(MANIFEST.format(image=image))
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["check", "--no-cache", "-f", str(path), "--hosts-dir", str(hosts_dir), "--format", "json",
                     "--timeout", "5"], stdout=out, stderr=err)
    return code, (json.loads(out.getvalue()) if out.getvalue() else {}), err.getvalue()


def _rules(doc: dict) -> set[str]:
    return {f["rule"] for f in doc.get("findings", [])}


def test_a_mirror_host_is_read_first_and_the_findings_name_the_image_as_written(
        tmp_path: Path, catalogue: Catalogue, dead_port: int) -> None:
    hosts = _hosts(tmp_path / "certs.d", "nodes.example_5000_", f"""\
server = "https://{UPSTREAM}"

[host."http://127.0.0.1:{dead_port}"]
  capabilities = ["pull", "resolve"]

[host."http://{catalogue.host}"]
  capabilities = ["pull", "resolve"]
""")
    image = f"{UPSTREAM}/test/crlf:1.0"
    code, doc, err = _check(tmp_path, hosts, image)
    # the dead first host hands over to the second, which has the image: a real verdict, not unresolvable
    assert code == 1, err
    assert "interpreter-not-found" in _rules(doc) and "image-unresolvable" not in _rules(doc)
    assert {f["image"] for f in doc["findings"]} == {image}


def test_only_resolve_hosts_resolve_a_tag(tmp_path: Path, catalogue: Catalogue, dead_port: int) -> None:
    """A pull-only mirror is not asked for tags: the tag goes to the server, here a dead one."""
    hosts = _hosts(tmp_path / "certs.d", "nodes.example:5000", f"""\
server = "http://127.0.0.1:{dead_port}"

[host."http://{catalogue.host}"]
  capabilities = ["pull"]
""")
    code, doc, _ = _check(tmp_path, hosts, f"{UPSTREAM}/test/crlf:1.0")
    assert code == 0 and _rules(doc) == {"image-unresolvable"}
    assert f"127.0.0.1:{dead_port}" in doc["findings"][0]["message"]


def test_override_path_is_a_repository_prefix_and_default_applies_to_every_registry(
        tmp_path: Path, catalogue: Catalogue) -> None:
    hosts = _hosts(tmp_path / "certs.d", "_default", f"""\
[host."http://{catalogue.host}/v2/test"]
  capabilities = ["pull", "resolve"]
  override_path = true
""")
    code, doc, err = _check(tmp_path, hosts, "elsewhere.example/crlf:1.0")
    assert code == 1, err
    assert "interpreter-not-found" in _rules(doc)


def test_what_canrun_cannot_do_like_containerd_is_said_at_once(tmp_path: Path) -> None:
    hosts = _hosts(tmp_path / "certs.d", "registry.example", """\
server = "https://registry.example"

[host."https://mirror.example/some/path"]
  capabilities = ["pull", "fetch"]
  client = "client.pem"

[host."https://other.example"]
  ca = "missing-ca.pem"
""")
    with pytest.raises(UsageError) as exc:
        load_hosts_dir(hosts)
    text = str(exc.value)
    assert text.startswith(f"--hosts-dir {hosts}: 4 problems:")
    for part in ("client is not supported", "API root '/some/path/v2': canrun reads /v2 or /v2/<prefix> only",
                 "unknown capability fetch", "missing-ca.pem does not exist"):
        assert part in text, (part, text)
    _hosts(tmp_path / "bad", "r.example", "server = [\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_hosts_dir(tmp_path / "bad")


def test_hosts_order_capabilities_and_tls_as_parsed(tmp_path: Path) -> None:
    (tmp_path / "certs.d" / "docker.io").mkdir(parents=True)
    (tmp_path / "certs.d" / "docker.io" / "ca.pem").write_text("")
    hosts = _hosts(tmp_path / "certs.d", "docker.io", """\
[host."mirror-b.example:5000"]
  capabilities = ["pull"]
  skip_verify = true

[host."http://mirror-a.example"]
  ca = ["ca.pem"]
""")
    table = load_hosts_dir(hosts)
    endpoints = table.endpoints("docker.io")
    assert [(e.scheme, e.host, sorted(e.capabilities)) for e in endpoints] == [
        ("https", "mirror-b.example:5000", ["pull"]),
        ("http", "mirror-a.example", ["pull", "push", "resolve"]),
        ("https", "registry-1.docker.io", ["pull", "push", "resolve"]),  # no server: the registry itself
    ]
    assert set(table.insecure_hosts) == {"mirror-b.example:5000", "mirror-a.example"}
    assert table.ca_files == (hosts / "docker.io" / "ca.pem",)
    assert table.endpoints("quay.io") is None
