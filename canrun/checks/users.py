"""Who the container's process is: uid, gid, supplementary groups and capabilities.

The rules (kubelet ``determineEffectiveSecurityContext`` + ``verifyRunAsNonRoot``,
containerd CRI ``WithUser``/``WithAdditionalGIDs``/``WithCapabilities``):

* container securityContext fields win over the pod's, field by field;
* ``runAsUser`` set: the image USER is not consulted at all;
* otherwise the image USER's *user part* is used (its group part is ignored by
  the CRI); a name must be in the image's /etc/passwd (CreateContainerError);
* gid = ``runAsGroup``, else the passwd entry's gid (looked up by name, or by
  uid for a numeric user), else 0;
* supplementary groups = /etc/group memberships of the user (except a group of
  the user's own name) + ``supplementalGroups`` + ``fsGroup``;
* ``runAsNonRoot`` fails with uid 0 (an unset USER is root), or with a named
  USER and no ``runAsUser`` (the kubelet cannot verify a name);
* capabilities: the runtime default set (which has DAC_OVERRIDE) with ``add``/
  ``drop`` applied as containerd does (add ALL, drop ALL, add each, drop each);
  ``privileged: true`` then gives every capability, whatever ``drop`` says.
  Names are written without ``CAP_`` in Kubernetes; CRI-O and Docker accept the
  prefix anyway, containerd prepends ``CAP_`` blindly, so under containerd
  ``drop: [CAP_DAC_OVERRIDE]`` names ``CAP_CAP_DAC_OVERRIDE`` and drops nothing.
  Root keeps them; a non-root user keeps them under containerd and CRI-O;
  Docker (cri-dockerd) clears the effective set of non-root users.
"""

from __future__ import annotations

from dataclasses import dataclass

from canrun.findings import Finding, finding
from canrun.image.users import ImageUser, UserDB
from canrun.image.walk import CAP_DAC_OVERRIDE, Credentials, RootView
from canrun.spec import Container, PodSpec, SecurityContext

#: containerd's (CRI) default capability set.
DEFAULT_CAPS = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
    "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
})
#: CRI-O's default_capabilities.
CRIO_DEFAULT_CAPS = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "SETGID", "SETUID", "SETPCAP", "NET_BIND_SERVICE", "KILL",
})
ALL_CAPS = DEFAULT_CAPS | {
    "DAC_READ_SEARCH", "LINUX_IMMUTABLE", "NET_BROADCAST", "NET_ADMIN", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE",
    "SYS_RAWIO", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG", "LEASE", "AUDIT_CONTROL", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
}


@dataclass(frozen=True)
class EffectiveSecurity:
    run_as_user: int | None
    run_as_group: int | None
    run_as_non_root: bool | None
    capabilities_add: tuple[str, ...]
    capabilities_drop: tuple[str, ...]
    #: ``privileged: true`` on the container (the pod has no such field).
    privileged: bool
    supplemental_groups: tuple[int, ...]
    fs_group: int | None


def effective_security(pod: PodSpec, container: Container) -> EffectiveSecurity:
    """Container fields override pod fields one by one (kubelet's DetermineEffectiveSecurityContext)."""
    p = pod.security_context or SecurityContext()
    c = container.security_context or SecurityContext()

    def pick(name: str) -> object:
        value = getattr(c, name)
        return value if value is not None else getattr(p, name)

    return EffectiveSecurity(
        run_as_user=pick("run_as_user"),  # type: ignore[arg-type]
        run_as_group=pick("run_as_group"),  # type: ignore[arg-type]
        run_as_non_root=pick("run_as_non_root"),  # type: ignore[arg-type]
        capabilities_add=c.capabilities_add,
        capabilities_drop=c.capabilities_drop,
        privileged=bool(c.privileged),
        supplemental_groups=p.supplemental_groups,
        fs_group=p.fs_group,
    )


def _cap(name: str, runtime: str) -> str:
    """A capability name as the runtime reads it, without one ``CAP_`` (what the kernel set holds).

    containerd builds ``"CAP_" + upper(name)`` whatever the name is, so its
    ``CAP_DAC_OVERRIDE`` stays ``CAP_DAC_OVERRIDE`` here: a name that matches no
    capability.  CRI-O and Docker strip an existing prefix first.
    """
    name = name.strip().upper()
    if runtime == "containerd":
        return name
    return name[4:] if name.startswith("CAP_") else name


def prefixed_capabilities(runtime: str, names: tuple[str, ...]) -> list[str]:
    """The ``CAP_``-prefixed names the runtime will not recognise (only containerd has any)."""
    return [n for n in names if runtime == "containerd" and n.strip().upper().startswith("CAP_")]


def capabilities(runtime: str, add: tuple[str, ...], drop: tuple[str, ...], *,
                 privileged: bool = False) -> frozenset[str]:
    """The container's capability set, in containerd's order: add ALL, drop ALL, add each, drop each.

    ``privileged`` wins over all of it: containerd's buildLinuxSpec applies the
    list and then ``oci.WithPrivileged`` (every capability), and CRI-O's and
    Docker's privileged paths skip the list.
    """
    if privileged:
        return ALL_CAPS
    caps = set(CRIO_DEFAULT_CAPS if runtime == "cri-o" else DEFAULT_CAPS)
    adds = [_cap(a, runtime) for a in add]
    drops = [_cap(d, runtime) for d in drop]
    if "ALL" in adds:
        caps = set(ALL_CAPS)
    if "ALL" in drops:
        caps = set()
    caps |= {a for a in adds if a != "ALL" and a in ALL_CAPS}  # runc ignores names it does not know
    caps -= {d for d in drops if d != "ALL"}
    return frozenset(caps)


@dataclass(frozen=True)
class Identity:
    """The process credentials, and where each part came from (for messages)."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    username: str | None
    #: The container's capability set (bounding); ``creds.caps`` is what is effective at exec.
    capabilities: frozenset[str]
    creds: Credentials
    #: "runAsUser 1000", "image USER app (uid 1000)", "image default (root)".
    source: str
    runtime: str

    @property
    def non_root_kept_dac(self) -> bool:
        """A non-root process whose exec verdicts may hang on CAP_DAC_OVERRIDE."""
        return self.uid != 0 and CAP_DAC_OVERRIDE in self.creds.caps

    def describe(self) -> str:
        name = f" ({self.username})" if self.username else ""
        extra = [g for g in self.groups if g != self.gid]
        groups = f", groups {','.join(map(str, extra))}" if extra else ""
        return f"uid {self.uid}{name} gid {self.gid}{groups}"

    def evidence(self) -> dict[str, object]:
        return {"uid": self.uid, "gid": self.gid, "groups": list(self.groups), "username": self.username,
                "source": self.source}


def explicit_root_conflict(sec: EffectiveSecurity) -> Finding | None:
    """runAsNonRoot with an explicit ``runAsUser: 0``: refused by the kubelet whatever the image holds.

    The one ``nonroot-conflict`` the pod spec decides alone, so it is also judged
    when the image cannot be read (``checks/imageless.py``).
    """
    if not sec.run_as_non_root or sec.run_as_user != 0:
        return None
    return finding(
        "nonroot-conflict",
        "runAsNonRoot is true but runAsUser is 0: the kubelet refuses to start the container "
        "(container's runAsUser breaks non-root policy)",
        hint="set runAsUser to a non-zero uid, or drop runAsNonRoot",
        evidence={"run_as_user": 0})


def resolve_identity(pod: PodSpec, container: Container, user: str, fs: RootView,
                     runtime: str) -> tuple[Identity | None, list[Finding]]:
    """The identity the container runs as, or None (with a user-not-found finding) if it cannot start.

    ``user`` is the image config's USER; ``fs`` the image's root, for /etc/passwd and /etc/group.
    """
    sec = effective_security(pod, container)
    image_user = ImageUser.parse(user)
    db = UserDB.from_fs(fs)
    found: list[Finding] = []

    # runAsNonRoot is verified by the kubelet before the runtime reads any passwd file.
    explicit = explicit_root_conflict(sec)
    if explicit is not None:
        found.append(explicit)
    elif sec.run_as_non_root and sec.run_as_user is None:
        if image_user.name is not None:
            found.append(finding(
                "nonroot-conflict",
                f"runAsNonRoot is true and the image USER is the name {image_user.name!r} with no runAsUser: "
                f"the kubelet cannot verify a name is non-root and refuses to start the container",
                hint=f"set runAsUser to {_uid_hint(db, image_user.name)}, or make the image USER numeric",
                evidence={"image_user": image_user.raw}))
        elif not image_user.uid:
            what = "USER 0" if image_user.uid == 0 else "no USER (root)"
            found.append(finding(
                "nonroot-conflict",
                f"runAsNonRoot is true but the image has {what} and no runAsUser is set: the container would "
                f"run as root, so the kubelet refuses to start it",
                evidence={"image_user": image_user.raw}))

    entry = None
    if sec.run_as_user is not None:
        uid = sec.run_as_user
        entry = db.by_uid(uid)
        username = entry.name if entry else None
        source = f"runAsUser {uid}"
    elif image_user.name is not None:
        entry = db.by_name(image_user.name)
        if entry is None:
            where = "/etc/passwd" if db.has_passwd else "/etc/passwd (the image has none)"
            found.append(finding(
                "user-not-found",
                f"the image USER {image_user.name!r} is not in the image's {where}: the runtime fails with "
                f"CreateContainerError (no users found)",
                hint="add the user to /etc/passwd in the image (useradd/adduser in the Dockerfile), use a "
                     "numeric USER, or set runAsUser",
                evidence={"image_user": image_user.raw, "passwd": db.has_passwd}))
            return None, found
        uid, username = entry.uid, entry.name
        source = f"image USER {image_user.raw!r} (uid {uid})"
    else:
        uid = image_user.uid or 0
        entry = db.by_uid(uid)
        username = entry.name if entry else None
        source = f"image USER {image_user.raw!r}" if image_user.raw else "image default (no USER: root)"

    if sec.run_as_group is not None:
        gid = sec.run_as_group
    else:
        gid = entry.gid if entry is not None else 0
    groups = list(db.memberships(username))
    groups += list(sec.supplemental_groups)
    if sec.fs_group is not None:
        groups.append(sec.fs_group)
    group_tuple = tuple(dict.fromkeys([gid, *groups]))
    caps = capabilities(runtime, sec.capabilities_add, sec.capabilities_drop, privileged=sec.privileged)
    effective = caps if (uid == 0 or runtime != "docker") else frozenset()
    creds = Credentials(uid=uid, gid=gid, groups=frozenset(group_tuple), caps=effective)
    return Identity(uid, gid, group_tuple, username, caps, creds, source, runtime), found


def _uid_hint(db: UserDB, name: str) -> str:
    entry = db.by_name(name)
    return f"{entry.uid} ({name}'s uid in the image)" if entry is not None and entry.uid else "a non-zero uid"
