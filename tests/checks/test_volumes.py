"""Commands that live in volumes: the volume, not the image, decides."""

from __future__ import annotations

from canrun.findings import Severity
from canrun.image.model import ImageConfig
from canrun.spec import SecurityContext, Volume, VolumeItem, VolumeKind, VolumeMount

from .build import base_layer, container, d, f, merged, rules, run, script, sym

FS = merged(base_layer(d("/app"), f("/app/run.sh", 0o755), d("/scripts"), script("/scripts/start.sh", "#!/bin/sh")))


def cm(default_mode=None, items=(), name="scripts", kind=VolumeKind.CONFIG_MAP) -> Volume:
    return Volume(name=name, kind=kind, default_mode=default_mode, items=tuple(items), source="app-scripts")


def mounted(command, path="/scripts", sub_path=None, **kw):
    return container(command, mounts=[VolumeMount("scripts", path, sub_path)], **kw)


def test_configmap_script_without_exec_mode() -> None:
    found = run(FS, mounted(["/scripts/start.sh"]), volumes=(cm(),))
    assert rules(found) == ["command-not-executable"]
    assert "configMap 'app-scripts'" in found[0].message and "0644" in found[0].message
    assert "defaultMode: 0755" in found[0].hint
    assert found[0].evidence["volume"] == "scripts"


def test_configmap_with_exec_mode_is_not_verified_content() -> None:
    found = run(FS, mounted(["/scripts/start.sh"]), volumes=(cm(0o755),))
    assert rules(found) == ["not-verified"] and found[0].severity is Severity.INFO


def test_items_mode_overrides_default_and_unknown_item_is_missing() -> None:
    vol = cm(0o644, [VolumeItem("start.sh", 0o755), VolumeItem("conf/app.yaml")])
    assert rules(run(FS, mounted(["/scripts/start.sh"]), volumes=(vol,))) == ["not-verified"]
    found = run(FS, mounted(["/scripts/other.sh"]), volumes=(vol,))
    assert rules(found) == ["command-not-found"] and "configMap" in found[0].message
    found = run(FS, mounted(["/scripts/conf/app.yaml"]), volumes=(vol,))
    assert rules(found) == ["command-not-executable"] and "items[].mode" in found[0].hint


def test_volume_above_the_command_replaces_the_image_directory() -> None:
    # /app/run.sh exists in the image, but an emptyDir over /app hides it
    vol = Volume("scripts", VolumeKind.EMPTY_DIR)
    found = run(FS, mounted(["/app/run.sh"], path="/app"), volumes=(vol,))
    assert rules(found) == ["not-verified"] and "emptyDir" in found[0].message
    # a configMap over /app without that key: the image's file is gone
    found = run(FS, mounted(["/app/run.sh"], path="/app"), volumes=(cm(0o755, [VolumeItem("other")]),))
    assert rules(found) == ["command-not-found"]


def test_volume_elsewhere_does_not_matter() -> None:
    assert run(FS, mounted(["/app/run.sh"], path="/data"), volumes=(Volume("scripts", VolumeKind.PVC),)) == []


def test_sub_path_mount_of_one_key() -> None:
    vol = cm(None, [VolumeItem("start.sh", 0o555)])
    c = mounted(["/app/run.sh"], path="/app/run.sh", sub_path="start.sh")
    assert rules(run(FS, c, volumes=(vol,))) == ["not-verified"]
    vol = cm(None, [VolumeItem("start.sh")])
    assert rules(run(FS, c, volumes=(vol,))) == ["command-not-executable"]


def test_secret_and_projected_default_0644() -> None:
    for kind in (VolumeKind.SECRET, VolumeKind.PROJECTED):
        found = run(FS, mounted(["/scripts/start.sh"]), volumes=(cm(kind=kind),))
        assert rules(found) == ["command-not-executable"], kind


def test_fs_group_and_group_bits() -> None:
    # 0750 files owned root:fsGroup are executable by a non-root user in fsGroup, even without DAC_OVERRIDE
    vol = cm(0o750)
    c = mounted(["/scripts/start.sh"], user=1000, drop=["ALL"])
    assert rules(run(FS, c, volumes=(vol,))) == ["command-not-executable"]
    assert rules(run(FS, c, volumes=(vol,), pod_sc=SecurityContext(fs_group=2000))) == ["not-verified"]


def test_path_lookup_reaches_into_volumes() -> None:
    config = ImageConfig(env=("PATH=/scripts:/bin",))
    assert rules(run(FS, mounted(["start.sh"]), volumes=(cm(0o755),), config=config)) == ["not-verified"]
    # not executable in the volume: skipped, and nothing else on PATH
    found = run(FS, mounted(["start.sh"]), volumes=(cm(),), config=config)
    assert rules(found) == ["command-not-found"] and "/scripts/start.sh (not executable" in found[0].message
    # an opaque volume on PATH: unknowable
    found = run(FS, mounted(["start.sh"]), volumes=(Volume("scripts", VolumeKind.EMPTY_DIR),), config=config)
    assert rules(found) == ["not-verified"]


def test_symlink_in_image_into_a_volume() -> None:
    fs = merged(base_layer(d("/usr/local"), d("/usr/local/bin"), sym("/usr/local/bin/start", "/config/start.sh")))
    c = container(["start"], mounts=[VolumeMount("scripts", "/config")])
    assert rules(run(fs, c, volumes=(cm(),))) == ["command-not-found"]  # skipped on PATH: 0644
    assert rules(run(fs, c, volumes=(cm(0o755),))) == ["not-verified"]


def test_mount_path_resolves_through_image_symlinks() -> None:
    fs = merged(base_layer(d("/opt"), d("/opt/conf"), sym("/conf", "/opt/conf")))
    c = container(["/opt/conf/start.sh"], mounts=[VolumeMount("scripts", "/conf")])
    assert rules(run(fs, c, volumes=(cm(),))) == ["command-not-executable"]


def test_runtime_mounts_are_not_verified() -> None:
    assert rules(run(FS, container(["/proc/self/exe"]))) == ["not-verified"]


def test_kubelet_file_mounts_replace_image_files() -> None:
    fs = merged(base_layer(f("/etc/hosts", 0o755)))
    found = run(fs, container(["/etc/hosts"]))
    assert rules(found) == ["command-not-executable"] and "/etc/hosts the kubelet mounts" in found[0].message


def test_projected_source_without_items_adds_keys_canrun_cannot_list() -> None:
    """A projected volume of a listed configMap key plus a whole secret: an unlisted name may be a secret key."""
    listed = (VolumeItem("token", 0o644),)
    partial = Volume("scripts", VolumeKind.PROJECTED, default_mode=0o755, items=listed, source="app-scripts",
                     unlisted_keys=True)
    assert rules(run(FS, mounted(["/scripts/run.sh"]), volumes=(partial,))) == ["not-verified"]
    closed = Volume("scripts", VolumeKind.PROJECTED, default_mode=0o755, items=listed, source="app-scripts")
    assert rules(run(FS, mounted(["/scripts/run.sh"]), volumes=(closed,))) == ["command-not-found"]
    quiet = Volume("scripts", VolumeKind.PROJECTED, default_mode=0o644, items=listed, unlisted_keys=True)
    assert rules(run(FS, mounted(["/scripts/run.sh"]), volumes=(quiet,))) == ["command-not-executable"]


def test_projected_volume_from_yaml_knows_when_keys_are_unlisted() -> None:
    from canrun.kube.workloads import workload_from_object

    def pod(sources):
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "c", "image": "x"}],
            "volumes": [{"name": "v", "projected": {"sources": sources}}]}}

    token = {"serviceAccountToken": {"path": "token"}}
    listed = {"configMap": {"name": "a", "items": [{"key": "k", "path": "run.sh", "mode": 0o755}]}}
    whole = {"secret": {"name": "b"}}
    [vol] = workload_from_object(pod([token, listed])).pod.volumes
    assert not vol.unlisted_keys and [i.path for i in vol.items] == ["token", "run.sh"]
    [vol] = workload_from_object(pod([token, listed, whole])).pod.volumes
    assert vol.unlisted_keys
