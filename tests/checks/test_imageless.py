"""Verdicts that stand without the image: what canrun still says when the image cannot be read.

Two levels: ``check_without_image`` (a pure function of the pod spec) and the
validator over an image store whose registry backend fails the way a real one
does (RegistryUnreachable, ImageCorrupt), so the mapping from "could not read
the image" to findings is exercised as a front end sees it.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from canrun.checks import check_without_image
from canrun.checks.imageless import IMAGE_INDEPENDENT, UnknownImageFS
from canrun.errors import CanrunError, ImageCorrupt, RegistryUnreachable
from canrun.findings import Finding, Severity
from canrun.image.fs import OK, UNKNOWN
from canrun.image.store import ImageStore
from canrun.kube.scheduling import NodePool
from canrun.registry.reference import Reference
from canrun.spec import (
    Container, EnvVar, PodSpec, Resource, SecurityContext, Volume, VolumeItem, VolumeKind, VolumeMount, Workload,
)
from canrun.validator import Validator

from .build import AMD64, ARM64, rules

IMAGE = "registry.invalid/app:1"
ALLOWED = {"nonroot-conflict", "command-not-found", "command-not-executable"}


def cm(default_mode: int | None = 0o644, items: tuple[VolumeItem, ...] = (), kind: VolumeKind = VolumeKind.CONFIG_MAP,
       name: str = "s") -> Volume:
    return Volume(name=name, kind=kind, default_mode=default_mode, items=items, source="scripts")


def ctr(command: tuple[str, ...] | None = ("/scripts/run.sh",), *, mount: str | None = "/scripts",
        sub_path: str | None = None, user: int | None = None, non_root: bool | None = None,
        working_dir: str | None = None, env: tuple[EnvVar, ...] = (), args: tuple[str, ...] | None = None,
        drop: tuple[str, ...] = ()) -> Container:
    sc = None
    if (user, non_root) != (None, None) or drop:
        sc = SecurityContext(run_as_user=user, run_as_non_root=non_root, capabilities_drop=drop)
    mounts = (VolumeMount("s", mount, sub_path),) if mount else ()
    return Container(name="c", image=IMAGE, command=command, args=args, env=env, working_dir=working_dir,
                     security_context=sc, volume_mounts=mounts)


def judge(c: Container, *volumes: Volume, pod_sc: SecurityContext | None = None) -> list[Finding]:
    pod = PodSpec(containers=(c,), volumes=volumes or (cm(),), security_context=pod_sc)
    found = check_without_image(c, pod, AMD64)
    assert {f.rule for f in found} <= ALLOWED
    assert all(IMAGE_INDEPENDENT in f.message and f.evidence["image_independent"] for f in found)
    return found


NONROOT_ROOT = SecurityContext(run_as_non_root=True, run_as_user=0)


# ---------------------------------------------------------------------------------------------- fires

def test_the_issue_pod_gives_both_findings() -> None:
    found = judge(ctr(), cm(0o644), pod_sc=NONROOT_ROOT)
    assert sorted(rules(found)) == ["command-not-executable", "nonroot-conflict"]
    assert all(f.severity is Severity.ERROR for f in found)
    exe = next(f for f in found if f.rule == "command-not-executable")
    assert "no execute bit at all for any user" in exe.message and "0644" in exe.message
    assert "exit 126" in exe.message and "configMap 'scripts'" in exe.message
    assert "defaultMode: 0755" in exe.hint
    assert exe.evidence["volume"] == "s" and exe.evidence["mode"] == "0644" and "user" not in exe.evidence


def test_secret_items_without_the_named_key_is_command_not_found() -> None:
    vol = cm(0o755, (VolumeItem("other.sh"),), kind=VolumeKind.SECRET)
    found = judge(ctr(), vol)
    assert rules(found) == ["command-not-found"]
    assert "/scripts/run.sh does not exist" in found[0].message and "secret" in found[0].message
    assert "items" in found[0].hint


def test_projected_default_mode_0600_is_not_executable() -> None:
    found = judge(ctr(), cm(0o600, (VolumeItem("run.sh"),), kind=VolumeKind.PROJECTED))
    assert rules(found) == ["command-not-executable"] and "0600" in found[0].message


def test_item_mode_without_x_bits_is_not_executable_whatever_the_default() -> None:
    found = judge(ctr(), cm(0o755, (VolumeItem("run.sh", 0o640),)))
    assert rules(found) == ["command-not-executable"] and "items[].mode" in found[0].hint


def test_the_volume_directory_itself_is_not_executable() -> None:
    found = judge(ctr(("/scripts",)), cm(0o755))
    assert rules(found) == ["command-not-executable"] and "is a directory" in found[0].message


def test_relative_command_against_an_absolute_working_dir() -> None:
    assert rules(judge(ctr(("./run.sh",), working_dir="/scripts"))) == ["command-not-executable"]


def test_command_from_a_container_env_variable() -> None:
    c = ctr(("$(DIR)/run.sh",), env=(EnvVar("DIR", "/scripts"),))
    assert rules(judge(c)) == ["command-not-executable"]


def test_a_mount_below_image_directories() -> None:
    # /etc/app is image content canrun cannot see, but the mount point's parents exist (runc creates them)
    assert rules(judge(ctr(("/etc/app/scripts/run.sh",), mount="/etc/app/scripts"))) == ["command-not-executable"]


def test_container_non_root_over_a_pod_uid_0() -> None:
    found = judge(ctr(None, non_root=True), pod_sc=SecurityContext(run_as_user=0))
    assert rules(found) == ["nonroot-conflict"]
    assert "runAsUser is 0" in found[0].message


# --------------------------------------------------------------------------------------------- silent

def test_executable_default_mode_is_silent() -> None:
    assert judge(ctr(), cm(0o755)) == []


def test_mode_0750_for_uid_1000_depends_on_the_user_and_is_silent() -> None:
    # whether uid 1000 may run a root:root 0750 file hangs on its groups and capabilities: not judged,
    # even where the image would prove it fails (no DAC_OVERRIDE, and the image's passwd decides the groups)
    assert judge(ctr(user=1000), cm(0o750)) == []
    assert judge(ctr(user=1000, drop=("ALL",)), cm(0o750)) == []


def test_command_outside_any_volume_is_silent() -> None:
    assert judge(ctr(("/app/run.sh",))) == []
    assert judge(ctr(("/scriptsx/run.sh",))) == []  # a sibling of the mount point is image content


def test_no_command_in_the_pod_is_silent() -> None:
    assert judge(ctr(None)) == []  # the image ENTRYPOINT decides: no no-command without the image
    assert judge(ctr(None, args=("/scripts/run.sh",))) == []
    assert judge(ctr(())) == []


def test_non_root_with_a_non_zero_or_unset_uid_is_silent() -> None:
    assert judge(ctr(None), pod_sc=SecurityContext(run_as_non_root=True, run_as_user=1000)) == []
    assert judge(ctr(None), pod_sc=SecurityContext(run_as_non_root=True)) == []  # the image USER decides
    assert judge(ctr(None, user=1000), pod_sc=NONROOT_ROOT) == []  # container over pod
    assert judge(ctr(None, non_root=False), pod_sc=NONROOT_ROOT) == []


def test_commands_that_need_the_image_are_silent() -> None:
    assert judge(ctr(("run.sh",), env=(EnvVar("PATH", "/scripts"),))) == []  # a PATH lookup
    assert judge(ctr(("./run.sh",))) == []  # relative to the image's WorkingDir
    assert judge(ctr(("$(DIR)/run.sh",))) == []  # undefined: stays literal
    assert judge(ctr(("$(DIR)/run.sh",), env=(EnvVar("DIR", None),))) == []  # valueFrom


def test_content_canrun_cannot_see_is_silent() -> None:
    # emptyDir: no not-verified either, the image-unresolvable warning already says nothing was verified
    assert judge(ctr(), Volume("s", VolumeKind.EMPTY_DIR)) == []
    # a projected key that is there, executable: its content would decide
    assert judge(ctr(), cm(0o644, (VolumeItem("run.sh", 0o755),))) == []


def test_unknown_image_fs_knows_only_the_root_and_mount_parents() -> None:
    fs = UnknownImageFS()
    fs.add_mount_points(["/etc/app/scripts"])
    assert fs.resolve("/").outcome == OK
    assert fs.resolve("/etc/app").outcome == OK
    assert fs.resolve("/bin/sh").outcome == UNKNOWN
    assert fs.resolve("/etc/passwd").outcome == UNKNOWN
    assert fs.real_path("/a/../etc//app/./x") == "/etc/app/x"
    assert fs.file("/etc/passwd") is None and fs.removed_by("/bin/sh") is None
    assert not hasattr(fs, "apply")  # a view, not a builder


# ------------------------------------------------------------------------------------- the validator

class FailingBackend:
    """A registry backend that fails every read with one error, as a dead or lying registry does."""

    def __init__(self, exc: CanrunError) -> None:
        self.exc = exc

    async def resolve(self, ref: Reference) -> Any:
        raise self.exc

    async def manifest(self, ref: Reference, digest: str | None = None) -> Any:
        raise self.exc

    async def blob(self, ref: Reference, digest: str, *, max_size: int) -> bytes:
        raise self.exc

    def stream_blob(self, ref: Reference, digest: str, size: int | None = None) -> AbstractAsyncContextManager[Any]:
        raise self.exc

    async def aclose(self) -> None:
        return None


def workload(c: Container, *volumes: Volume, pod_sc: SecurityContext | None = None,
             annotations: dict[str, str] | None = None) -> Workload:
    return Workload(resource=Resource("Pod", "p", "default"),
                    pod=PodSpec(containers=(c,), volumes=volumes or (cm(),), security_context=pod_sc),
                    annotations=annotations or {})


async def validate(exc: CanrunError, w: Workload) -> list[Finding]:
    validator = Validator(ImageStore(FailingBackend(exc)))  # type: ignore[arg-type]
    report = await validator.check([w], NodePool.from_platforms([AMD64, ARM64]))
    return report.findings


@pytest.mark.parametrize("exc,unreadable", [
    (RegistryUnreachable("cannot connect to registry.invalid"), "image-unresolvable"),
    (ImageCorrupt("manifest digest mismatch"), "image-corrupt"),
], ids=["unresolvable", "corrupt"])
async def test_validator_adds_image_independent_findings_to_the_unreadable_one(exc: CanrunError,
                                                                               unreadable: str) -> None:
    found = await validate(exc, workload(ctr(), cm(0o644), pod_sc=NONROOT_ROOT))
    assert sorted(rules(found)) == sorted(["command-not-executable", "nonroot-conflict", unreadable])
    for f in found:  # one finding per rule, naming both platforms, stamped with the workload's context
        assert f.platform == "linux/amd64,linux/arm64"
        assert f.container == "c" and f.image == IMAGE and f.resource == Resource("Pod", "p", "default")


async def test_validator_fixed_pod_reports_only_the_unreadable_image() -> None:
    found = await validate(RegistryUnreachable("down"), workload(ctr(), cm(0o755)))
    assert rules(found) == ["image-unresolvable"]


async def test_skip_annotation_applies_to_image_independent_findings() -> None:
    found = await validate(RegistryUnreachable("down"),
                           workload(ctr(), cm(0o644), pod_sc=NONROOT_ROOT,
                                    annotations={"canrun.io/skip": "nonroot-conflict"}))
    assert sorted(rules(found)) == ["command-not-executable", "image-unresolvable"]
