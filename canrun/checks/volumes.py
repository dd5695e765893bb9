"""Pod volumes laid over the image, as the path walk sees them.

A volume mounted at (or above) the command's path replaces what the image had
there, so lookups that cross a mount point continue in the volume:

* configMap, secret, projected and downwardAPI volumes have known file modes:
  ``items[].mode``, else ``defaultMode``, else Kubernetes' 0644 — a script there
  without an execute bit is exit 126 (the fix is ``defaultMode: 0755``).  The
  files are owned by root, group ``fsGroup`` when one is set.  Without
  ``items`` every key becomes a top-level file whose name canrun cannot list:
  such a file is judged by its mode, "if the key exists";
* ``subPath`` mounts one file or directory of the volume;
* emptyDir, PVC, hostPath, image volumes … hold content canrun cannot see: a
  lookup that reaches into them is ``UNKNOWN`` (reported as not verified);
* the runtime mounts /proc, /sys and /dev over the image as well.
"""

from __future__ import annotations

from dataclasses import dataclass

from canrun.image.model import EntryType
from canrun.image.node import Node, Opaque
from canrun.image.walk import RootView
from canrun.spec import Container, PodSpec, Volume, VolumeItem, VolumeKind

#: Kubernetes' default file mode for configMap/secret/projected/downwardAPI volumes.
DEFAULT_MODE = 0o644

_KNOWN = {VolumeKind.CONFIG_MAP, VolumeKind.SECRET, VolumeKind.PROJECTED, VolumeKind.DOWNWARD_API}


@dataclass
class MountedVolume:
    """One volume where the process sees it (implements ``canrun.image.walk.Mount``).

    Not ``spec.VolumeMount``, the pod spec's record: this is that record (or a
    mount the runtime adds) resolved against the image and the pod's volumes.
    """

    path: str
    name: str
    volume: Volume | None
    sub_path: str | None = None
    fs_group: int | None = None
    #: Set for runtime mounts (/proc …): why the content is unknowable.
    runtime_mount: str | None = None

    @property
    def known(self) -> bool:
        return self.volume is not None and self.volume.kind in _KNOWN

    def describe(self) -> str:
        if self.runtime_mount:
            return self.runtime_mount
        if self.volume is None:
            return f"volume {self.name!r} mounted at {self.path} (not defined in the pod)"
        source = f" {self.volume.source!r}" if self.volume.source else ""
        sub = f" (subPath {self.sub_path})" if self.sub_path else ""
        return f"{self.volume.kind.value}{source} volume {self.name!r} mounted at {self.path}{sub}"

    def _dir(self, rel: str) -> Node:
        return Node(self._abs(rel), EntryType.DIR, 0o755 if self.fs_group is None else 0o2775, 0,
                    self.fs_group or 0, volume=self.name)

    def _abs(self, rel: str) -> str:
        return self.path if not rel else (self.path.rstrip("/") + "/" + rel)

    def node(self, rel: str) -> Node | Opaque | None:
        if not self.known:
            return Opaque(f"the content of the {self.describe()} is not visible to canrun")
        assert self.volume is not None
        inner = "/".join(p for p in ((self.sub_path or "").strip("/"), rel) if p)
        if not inner:
            return self._dir(rel)
        default = self.volume.default_mode if self.volume.default_mode is not None else DEFAULT_MODE
        if self.volume.items:
            for item in self.volume.items:
                path = item.path.strip("/")
                if path == inner:
                    mode = item.mode if item.mode is not None else default
                    return Node(self._abs(rel), EntryType.FILE, mode & 0o7777, 0, self.fs_group or 0,
                                volume=self.name)
                if path.startswith(inner + "/"):
                    return self._dir(rel)
            if not self.volume.unlisted_keys:
                return None
        if "/" in inner:
            return None  # keys are file names: without items there are no subdirectories
        return Node(self._abs(rel), EntryType.FILE, default & 0o7777, 0, self.fs_group or 0, volume=self.name)


def pod_mounts(pod: PodSpec, container: Container, fs: RootView) -> list[MountedVolume]:
    """What is mounted over the image for this container: the runtime's mounts, the kubelet's files, the volumes."""
    volumes = {v.name: v for v in pod.volumes}
    fs_group = pod.security_context.fs_group if pod.security_context else None
    mounts = [
        MountedVolume("/proc", "proc", None, runtime_mount="procfs the runtime mounts at /proc"),
        MountedVolume("/sys", "sysfs", None, runtime_mount="sysfs the runtime mounts at /sys"),
        MountedVolume("/dev", "dev", None, runtime_mount="tmpfs the runtime mounts at /dev"),
    ]
    # files the kubelet and the runtime bind-mount into every container (0644, root-owned)
    etc = Volume("etc-files", VolumeKind.PROJECTED,
                 items=(VolumeItem("hosts"), VolumeItem("resolv.conf"), VolumeItem("hostname")),
                 source="kubelet")
    for name in ("hosts", "resolv.conf", "hostname"):
        mounts.append(MountedVolume(fs.real_path(f"/etc/{name}"), f"etc-{name}", etc, name,
                                    runtime_mount=f"/etc/{name} the kubelet mounts"))
    mounts.append(MountedVolume(fs.real_path("/dev/termination-log"), "termination-log",
                                Volume("termination-log", VolumeKind.PROJECTED, items=(VolumeItem("log"),),
                                       source="kubelet"), "log",
                                runtime_mount="/dev/termination-log the kubelet mounts"))
    for vm in container.volume_mounts:
        # runc resolves the mount point through the image's symlinks (securejoin)
        path = fs.real_path(vm.mount_path)
        mounts = [m for m in mounts if m.path != path]
        mounts.append(MountedVolume(path, vm.name, volumes.get(vm.name), vm.sub_path or None, fs_group))
    return mounts


def volume_hint(node: Node, mount: MountedVolume | None) -> str:
    """The fix for a non-executable file that comes from a volume."""
    if mount is None or mount.volume is None:
        return "set the execute bit on the file"
    kind = mount.volume.kind
    has_item = any(i.mode is not None for i in mount.volume.items)
    where = "items[].mode" if has_item else "defaultMode"
    if kind in (VolumeKind.CONFIG_MAP, VolumeKind.SECRET, VolumeKind.PROJECTED, VolumeKind.DOWNWARD_API):
        return (f"set {where}: 0755 (decimal 493) on the {kind.value} volume {mount.name!r} "
                f"(the default is 0644), or run the script through its interpreter: command: [sh, {node.path}]")
    return "set the execute bit on the file"
