"""What can still be judged about a container whose image cannot be read.

When the registry is down, refuses the credentials or has no such tag
(``image-unresolvable``), or serves content that does not match its digest
(``image-corrupt``), some failures are still certain, because nothing the
image holds can change them:

* ``runAsNonRoot: true`` with an explicit ``runAsUser: 0`` (container over
  pod): the kubelet refuses it before it looks at the image
  (CreateContainerConfigError);
* the pod's own ``command[0]`` leading into a configMap/secret/projected/
  downwardAPI volume, which replaces the image's directory: a file whose mode
  has no execute bit at all (EACCES even with CAP_DAC_OVERRIDE, exit 126), a
  directory (126), or a name the volume does not project (ENOENT, 127).

The command is walked by the real path walker (``image/walk.resolve``) with the
pod's volume mounts, over ``UnknownImageFS``: an image about which nothing is
known but that it has a root directory and the directories leading to mount
points (runc creates them when the image lacks them).  Every other image path
is ``Opaque``, so a lookup that reaches image content comes back UNKNOWN and
stays silent.  The walk runs as root with every capability, the most
permissive process there is, so a verdict it reaches holds for any user;
anything that hangs on the uid/gid, the image's ENTRYPOINT, WorkingDir or PATH
or a file's content is not judged here (the image-unresolvable warning already
says the image was not verified).  No ``no-command``, ``user-not-found``,
interpreter, loader, exec-format or PATH verdicts come from this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from canrun.checks.context import ExecContext
from canrun.checks.exec import Judge
from canrun.checks.process import effective_process, pod_command
from canrun.checks.users import ALL_CAPS, Identity, effective_security, explicit_root_conflict
from canrun.checks.volumes import MountedVolume, pod_mounts
from canrun.findings import Finding
from canrun.image.model import EntryType, ImageConfig
from canrun.image.node import Node, Opaque
from canrun.image.walk import ENOENT, ENOTDIR, OK, Credentials, Resolution, RootView
from canrun.platform import Platform
from canrun.spec import Container, PodSpec

#: Added to every message from here: the user must know this verdict stands even though the image was not read.
IMAGE_INDEPENDENT = "the image could not be read, but this verdict does not depend on it"

#: The rules this module may report (everything else needs the image).
_RULES = ("command-not-found", "command-not-executable")


class UnknownImageFS(RootView):
    """A root filesystem about which nothing is known: ``Opaque`` for any image path but "/".

    The directories leading to a mount point are the exception: runc creates
    them (root-owned 0755) when the image lacks them, and if the image has them
    as something else the mount fails or follows them to the same place, so a
    verdict reached inside the volume stands either way.  Which image paths are
    symlinks is unknown, so ``real_path`` only normalises (runc and execve
    follow the same ones).
    """

    def __init__(self, mount_points: Iterable[str] = ()) -> None:
        self.layer_digests: list[str] = []
        self._dirs: set[str] = set()
        self._opaque = Opaque("the image could not be read, so its content is unknown")
        self.add_mount_points(mount_points)

    def add_mount_points(self, paths: Iterable[str]) -> None:
        """Make the parents of these mount points directories (the mount points themselves are the mounts')."""
        for path in paths:
            current = path
            while current not in ("/", ""):
                current = current.rsplit("/", 1)[0] or "/"
                self._dirs.add(current)

    def node(self, path: str) -> Node | Opaque | None:
        if path == "/" or path in self._dirs:
            return Node(path, EntryType.DIR, 0o755)
        return self._opaque

    def children(self, path: str) -> list[str]:
        return []

    def removed_by(self, path: str) -> int | None:
        return None

    def kept_bytes(self, path: str) -> bytes | None:
        return None


class _ImagelessJudge(Judge):
    """The exec judge speaking for every possible user, with no image evidence."""

    def who(self) -> str:
        return "any user, even root with every capability"

    def evidence_of(self, res: Resolution, node: Node | None = None) -> dict[str, object]:
        evidence = super().evidence_of(res, node)
        evidence.pop("user", None)
        return evidence


def _anyone(runtime: str) -> Identity:
    """Root with every capability: what this process cannot exec, nobody can."""
    creds = Credentials(uid=0, gid=0, groups=frozenset({0}), caps=ALL_CAPS)
    return Identity(0, 0, (0,), None, ALL_CAPS, creds, "any user", runtime)


def _decided_in_volume(res: Resolution) -> bool:
    """The lookup failed or ended inside a configMap/secret/projected/downwardAPI volume, not in the image."""
    if res.outcome == ENOENT:
        return isinstance(res.mount, MountedVolume) and res.mount.known
    if res.outcome == ENOTDIR:
        return res.blocker is not None and res.blocker.volume is not None
    if res.outcome == OK and res.node is not None and res.node.volume is not None:
        node = res.node
        return node.type is EntryType.DIR or (node.type is EntryType.FILE and not node.mode & 0o111)
    return False


def _independent(f: Finding) -> Finding:
    return replace(f, message=f"{f.message}; {IMAGE_INDEPENDENT}",
                   evidence={**f.evidence, "image_independent": True})


def command_in_volume(container: Container, pod: PodSpec, node: Platform, runtime: str) -> list[Finding]:
    """The pod's ``command[0]`` judged inside the volume it leads into, or nothing."""
    argv0 = pod_command(container)
    if argv0 is None or "/" not in argv0:
        return []  # the image ENTRYPOINT, or a PATH lookup through the image: not judged without it
    if not argv0.startswith("/") and not (container.working_dir or "").startswith("/"):
        return []  # relative to the image's WorkingDir, which is unknown
    fs = UnknownImageFS()
    mounts = pod_mounts(pod, container, fs)
    fs.add_mount_points(m.path for m in mounts)
    ctx = ExecContext(container=container, pod=pod, config=ImageConfig(), fs=fs, node=node, image_platform=node,
                      runtime=runtime)
    process, _ = effective_process(container, ctx.config)
    if process is None:
        return []
    anyone = _anyone(runtime)
    judge = _ImagelessJudge(ctx, process, anyone, anyone.creds, mounts)
    res = judge.resolve(argv0)
    if not _decided_in_volume(res):
        return []
    if res.outcome == OK:
        judge.execve(res, argv0, depth=0, chain=[])
    else:
        judge.path_failure(res, f"command {argv0!r} ({process.origin_phrase()})",
                           hint_missing="add the key to the volume's items (or drop items to project every key), "
                                        "or point `command` at a file the volume has")
    return [_independent(f) for f in judge.findings if f.rule in _RULES]


def check_without_image(container: Container, pod: PodSpec, node: Platform, *,
                        runtime: str = "containerd") -> list[Finding]:
    """Every finding for a container whose image could not be read, on one node platform."""
    found: list[Finding] = []
    conflict = explicit_root_conflict(effective_security(pod, container))
    if conflict is not None:
        found.append(_independent(conflict))
    return found + command_in_volume(container, pod, node, runtime)


__all__ = ["IMAGE_INDEPENDENT", "UnknownImageFS", "check_without_image", "command_in_volume"]
