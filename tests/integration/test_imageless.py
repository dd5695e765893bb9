"""``canrun check`` when the registry is unreachable: what the pod spec decides alone is still reported.

No registry runs here: the image lives on 127.0.0.1:1, where nothing listens,
so every read fails fast with image-unresolvable — and the runAsNonRoot/uid 0
conflict and the 0644 script from a configMap must still fail the run.
"""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import canrun

POD = """apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  securityContext: {{runAsNonRoot: true, runAsUser: {uid}}}
  containers:
  - name: c
    image: 127.0.0.1:1/none:1
    command: ["/scripts/run.sh"]
    volumeMounts: [{{name: s, mountPath: /scripts}}]
  volumes:
  - name: s
    configMap: {{name: cm, defaultMode: {mode}}}
"""


def _check(manifest: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    return canrun("check", "-f", str(manifest), "--format", "json", "--timeout", "2",
                  "--platform", "linux/amd64,linux/arm64", cache_dir=tmp_path / "cache", timeout=60)


def test_unreachable_image_still_reports_what_does_not_depend_on_it(tmp_path: Path) -> None:
    manifest = tmp_path / "noimg.yaml"
    manifest.write_text(POD.format(name="broken", uid=0, mode="0644") + "---\n"
                        + POD.format(name="fixed", uid=1000, mode="0755"))
    run = _check(manifest, tmp_path)
    assert run.code == 1, run
    by_name = {name: {(f["rule"], f["severity"]) for f in run.by_name(name)} for name in ("broken", "fixed")}
    assert by_name["broken"] == {("image-unresolvable", "warning"), ("nonroot-conflict", "error"),
                                 ("command-not-executable", "error")}, run
    assert by_name["fixed"] == {("image-unresolvable", "warning")}, run
    for f in run.by_name("broken"):
        assert f["platform"] == "linux/amd64,linux/arm64"
        if f["severity"] == "error":
            assert "does not depend on" in f["message"] and f["evidence"]["image_independent"] is True, f


def test_fixed_pod_with_unreachable_image_exits_zero(tmp_path: Path) -> None:
    manifest = tmp_path / "fixed.yaml"
    manifest.write_text(POD.format(name="fixed", uid=1000, mode="0755"))
    run = _check(manifest, tmp_path)
    assert run.code == 0, run
    assert [f["rule"] for f in run.findings] == ["image-unresolvable"], run
