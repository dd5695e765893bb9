"""The image's /etc/passwd and /etc/group, read the way the runtime reads them.

containerd (``oci.WithUser``/``WithUserID``/``WithUsername``/``WithAdditionalGIDs``)
parses these files with moby/sys/user: one entry per non-blank line, fields
split on ``:``, numbers that do not parse count as 0, and the *first* matching
entry wins.  Nothing else is consulted (no NSS), which is why a name the files
lack fails the container even if the image ships an LDAP client.
"""

from __future__ import annotations

from dataclasses import dataclass

from canrun.image.walk import Tree, read_file

PASSWD = "/etc/passwd"
GROUP = "/etc/group"


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str = ""
    shell: str = ""


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...] = ()


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        return 0


def _lines(data: bytes | None) -> list[list[str]]:
    if not data:
        return []
    out = []
    for raw in data.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line:
            out.append(line.split(":"))
    return out


def parse_passwd(data: bytes | None) -> list[PasswdEntry]:
    entries = []
    for f in _lines(data):
        f += [""] * (7 - len(f))
        entries.append(PasswdEntry(f[0], _int(f[2]), _int(f[3]), f[5], f[6]))
    return entries


def parse_group(data: bytes | None) -> list[GroupEntry]:
    entries = []
    for f in _lines(data):
        f += [""] * (4 - len(f))
        members = tuple(m.strip() for m in f[3].split(",") if m.strip())
        entries.append(GroupEntry(f[0], _int(f[2]), members))
    return entries


@dataclass(frozen=True)
class UserDB:
    """The image's users and groups (empty when the files are absent)."""

    passwd: tuple[PasswdEntry, ...] = ()
    group: tuple[GroupEntry, ...] = ()
    has_passwd: bool = False

    @classmethod
    def from_fs(cls, fs: Tree) -> UserDB:
        passwd, group = read_file(fs, PASSWD), read_file(fs, GROUP)
        return cls(tuple(parse_passwd(passwd)), tuple(parse_group(group)), passwd is not None)

    def by_name(self, name: str) -> PasswdEntry | None:
        return next((u for u in self.passwd if u.name == name), None)

    def by_uid(self, uid: int) -> PasswdEntry | None:
        return next((u for u in self.passwd if u.uid == uid), None)

    def memberships(self, username: str | None) -> tuple[int, ...]:
        """containerd's WithAdditionalGIDs: groups listing the user as a member (not its same-name group)."""
        if not username:
            return ()
        return tuple(dict.fromkeys(g.gid for g in self.group if g.name != username and username in g.members))


@dataclass(frozen=True)
class ImageUser:
    """An image ``USER`` split the way the CRI does it: the user part only; the group part is ignored."""

    raw: str
    uid: int | None  # numeric user
    name: str | None  # named user
    ignored_group: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageUser:
        text = text.strip()
        if not text:
            return cls(raw="", uid=None, name=None)
        user, _, group = text.partition(":")
        if user.isdigit():
            return cls(text, int(user), None, group or None)
        return cls(text, None, user, group or None)


__all__ = ["GROUP", "PASSWD", "GroupEntry", "ImageUser", "PasswdEntry", "UserDB", "parse_group", "parse_passwd"]
