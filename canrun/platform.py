"""Node and image platforms, parsed, normalised and matched the way containerd does it.

A node only reports ``kubernetes.io/os`` and ``kubernetes.io/arch``; an image
index entry carries os/architecture/variant and, optionally, ``os.version`` and
``os.features``.  Which entries a node pulls is containerd's ``platforms``
package (github.com/containerd/platforms), reproduced here:

* ``Platform.parse`` reads containerd's specifier syntax:
  ``<os>[(<os.version>[+<feature>]*)]``, ``<arch>`` or ``<os>/<arch>[/<variant>]``
  (``linux``, ``arm64``, ``windows(10.0.17763)/amd64``, ``linux(+gpu)/amd64``).
  A lone OS or architecture is completed with canrun's default node
  (linux/amd64), where containerd completes it with the machine it runs on.
* Normalisation is containerd's ``Normalize`` (``database.go``): names are
  lower-cased, ``macos``→``darwin``, ``aarch64``→``arm64``, ``x86_64``/``x86-64``
  →``amd64``, ``i386``→``386``, ``armhf``→``arm/v7``, ``armel``→``arm/v6``; a bare
  ``arm`` is ``arm/v7``; ``arm64`` variants ``8``/``v8``/``v8.0`` are plain
  arm64 and ``9``/``9.0``/``v9.0`` are ``v9``; ``amd64/v1`` is plain amd64;
  ``os.features`` are sorted and de-duplicated.  Nothing else is an alias
  (``i686`` is not ``386`` to containerd, so it is not here either).
* ``accepts`` is ``platformVector`` (``compare.go``): what ``platforms.Only``
  takes, most preferred first: an amd64/vN node takes amd64 levels N…1, then
  386; arm/vN takes arm/vN…v5; arm64/v8.x takes v8.x…v8, arm64/v9.x takes
  v9.x…v9 then v8.(x+5)…v8, and then 32-bit arm from v8 (v9 for a v9 node) down.
* One candidate matches an image platform (``matches``, containerd's
  ``NewMatcher``) when os/architecture/variant are equal after normalisation,
  the image's ``os.features`` are a subset of the node's (a Linux node has
  none, so an entry that requires a feature is never pulled there), and, on a
  Windows node whose OS version is known, the image's ``os.version`` is one that
  host runs (``platform_windows_compat.go``).
* containerd 2.1+ pulls through its transfer service, which filters index
  entries with ``platforms.Ordered(DefaultSpec())``: the node's own platform
  only (``match_rank(..., exact=True)``); containerd ≤ 2.0, and 2.1+ with
  ``use_local_image_pull``, use ``platforms.Only`` with its fallbacks.
  ``exact_pull_match`` says which a runtime setting means.

The ELF table maps each architecture to the (class, machine, byte order) its
binaries must have: that is how a mislabeled image is caught.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from canrun.errors import ImageCorrupt, UsageError

#: canrun's stand-ins for containerd's runtime.GOOS / runtime.GOARCH when a specifier names only one half.
DEFAULT_OS = "linux"
DEFAULT_ARCH = "amd64"

#: Operating systems and architectures containerd's parser knows (database.go, from Go's syslist).
KNOWN_OS = frozenset({"aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js", "linux",
                      "nacl", "netbsd", "openbsd", "plan9", "solaris", "windows", "zos"})
KNOWN_ARCH = frozenset({"386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le", "loong64",
                        "mips", "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc", "riscv", "riscv64",
                        "s390", "s390x", "sparc", "sparc64", "wasm"})

_OS_PART = re.compile(r"([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.%-]*)((?:\+[A-Za-z0-9_.%-]+)*)\))?")
_PART = re.compile(r"[A-Za-z0-9_.-]+")
_GO_INT = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.Atoi accepts
_GO_UINT = re.compile(r"[0-9]+")  # strconv.ParseUint, base 10
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")

#: The first containerd release whose CRI plugin pulls through the transfer service by default.
EXACT_PULL_SINCE = (2, 1)
#: What ``--containerd-version`` means when not given: the current releases' default pull path.
DEFAULT_CONTAINERD_VERSION = "2.1"

#: ELF identity per GOARCH-style architecture: (EI_CLASS bits, e_machine, little endian).
ELF_IDENTITY: dict[str, tuple[int, int, bool]] = {
    "amd64": (64, 62, True),
    "386": (32, 3, True),
    "arm64": (64, 183, True),
    "arm": (32, 40, True),
    "ppc64le": (64, 21, True),
    "ppc64": (64, 21, False),
    "s390x": (64, 22, False),
    "riscv64": (64, 243, True),
    "mips64le": (64, 8, True),
    "loong64": (64, 258, True),
}

#: e_machine numbers to names, for messages ("x86-64 code on an arm64 node").
ELF_MACHINE_NAMES: dict[int, str] = {
    3: "x86 (386)",
    8: "MIPS",
    21: "PowerPC64",
    22: "s390",
    40: "ARM",
    62: "x86-64",
    183: "AArch64",
    243: "RISC-V",
    258: "LoongArch",
}


@dataclass(frozen=True, order=True)
class Platform:
    """An os/architecture[/variant] triple (with ``os.version``/``os.features``), always held normalised."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        os_, arch, variant = _normalise(self.os, self.architecture, self.variant)
        object.__setattr__(self, "os", os_)
        object.__setattr__(self, "architecture", arch)
        object.__setattr__(self, "variant", variant)
        object.__setattr__(self, "os_features", tuple(sorted(set(self.os_features))))

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse a containerd platform specifier (``linux/arm64``, ``arm64``, ``windows(10.0.17763)/amd64``).

        Raises UsageError for what containerd's ``platforms.Parse`` refuses.
        """
        spec = text.strip()

        def bad(why: str) -> UsageError:
            return UsageError(f"invalid platform {text!r}: {why}; expected os/arch[/variant], e.g. linux/arm64")

        if "*" in spec:
            return _raise(bad("wildcards are not supported"))
        parts = spec.split("/", 3)
        if len(parts) > 3:
            return _raise(bad("too many components"))
        head = _OS_PART.fullmatch(parts[0])
        if head is None:
            return _raise(bad(f"{parts[0]!r} is not an OS[(version[+feature]...)]"))
        for part in parts[1:]:
            if not _PART.fullmatch(part):
                return _raise(bad(f"{part!r} is not a platform component"))
        try:
            version = _decode(head.group(2) or "")
            features = tuple(_decode(f) for f in head.group(3)[1:].split("+")) if head.group(3) else ()
        except ValueError as exc:
            return _raise(bad(str(exc)))
        os_ = head.group(1)
        if len(parts) == 1:
            if _normalise_os(os_) in KNOWN_OS:
                return cls(os_, DEFAULT_ARCH, "", version, features)
            arch, variant = _normalise_arch(parts[0], "")
            if arch in KNOWN_ARCH:
                return cls(DEFAULT_OS, arch, variant)
            return _raise(bad("unknown operating system or architecture"))
        return cls(os_, parts[1], parts[2] if len(parts) == 3 else "", version, features)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Platform:
        """Build from an OCI ``platform`` object or an image config (os/architecture/variant/os.version/os.features).

        ``os.features`` must be a list of strings, as Go decodes it (containerd fails the pull otherwise).
        """
        features = data.get("os.features")
        if features is None:
            features = []
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise ImageCorrupt("platform os.features is not a list of strings")
        version = data.get("os.version")
        if version is not None and not isinstance(version, str):
            raise ImageCorrupt("platform os.version is not a string")
        return cls(str(data.get("os") or ""), str(data.get("architecture") or ""), str(data.get("variant") or ""),
                   version or "", tuple(features))

    def __str__(self) -> str:
        os_ = self.os
        options = _encode(self.os_version) + "".join("+" + _encode(f) for f in self.os_features)
        if options:
            os_ = f"{os_}({options})"
        return "/".join(p for p in (os_, self.architecture, self.variant) if p)

    @property
    def elf_identity(self) -> tuple[int, int, bool] | None:
        return ELF_IDENTITY.get(self.architecture)

    def _like(self, architecture: str, variant: str = "") -> Platform:
        return Platform(self.os, architecture, variant, self.os_version, self.os_features)

    def accepts(self) -> list[Platform]:
        """The image platforms a node of this platform pulls under ``platforms.Default()``, most preferred first.

        That is ``platforms.Only`` on Linux; on Windows ``Default()`` matches the
        node's own platform alone (``defaults_windows.go``): no 386 fallback there.
        """
        out = [self]
        if self.os == "windows":
            return out
        arch, variant = self.architecture, self.variant
        if arch == "amd64":
            level = _go_int(variant.removeprefix("v"))
            if level is not None and level > 1:
                out += [self._like("amd64", f"v{n}") for n in range(level - 1, 0, -1)]
            out.append(self._like("386"))
        elif arch == "arm":
            out += self._arm_below(variant)
        elif arch == "arm64":
            variant = variant or "v8"
            major_text, dot, minor_text = variant.partition(".")
            major = _go_int(major_text.removeprefix("v"))
            if major is not None and major >= 8:
                minor = 0
                if len(variant) == 4 and dot:
                    minor = _go_int(minor_text) or 0
                if major == 9:
                    out += [self._like("arm64", f"v9.{n}" if n else "v9") for n in range(minor - 1, -1, -1)]
                    # v9.0 branched from v8.5: a v9.x core runs v8.(x+5) code
                    major, minor = 8, minor + 5
                    out.append(self._like("arm64", f"v8.{minor}"))
                out += [self._like("arm64", f"v{major}.{n}" if n else f"v{major}") for n in range(minor - 1, -1, -1)]
            if variant.startswith(("v8.", "v9.")):
                variant = "v8"
            arm = self._like("arm", variant)
            out += [arm, *arm._arm_below(arm.variant)]
        return list(dict.fromkeys(out))

    def _arm_below(self, variant: str) -> list[Platform]:
        level = _go_int(variant.removeprefix("v"))
        if level is None or level <= 5:
            return []
        return [self._like("arm", f"v{n}") for n in range(level - 1, 4, -1)]

    def matches(self, image: Platform) -> bool:
        """Whether this one candidate matches an image platform (containerd's ``NewMatcher(self).Match``)."""
        if (image.os or self.os, image.architecture, image.variant) != (self.os, self.architecture, self.variant):
            return False
        if self.os == "windows" and not windows_runs(self.os_version, image.os_version):
            return False
        return set(image.os_features) <= set(self.os_features)

    def match_rank(self, image: Platform, *, exact: bool = False) -> int | None:
        """Preference rank of ``image`` for a node of this platform (0 best), None if the node does not pull it.

        ``exact``: containerd 2.1+'s transfer service, which takes the node's own platform only.
        """
        for rank, candidate in enumerate([self] if exact else self.accepts()):
            if candidate.matches(image):
                return rank
        return None

    def runs_elf(self, elf_class: int, machine: int, little_endian: bool) -> bool:
        """Whether a node of this platform can execute an ELF of this identity."""
        for candidate in self.accepts():
            if candidate.elf_identity == (elf_class, machine, little_endian):
                return True
        return False


def windows_runs(host_version: str, image_version: str) -> bool:
    """Whether a Windows host of ``host_version`` runs a container image of ``image_version``.

    containerd's ``windowsVersionMatcher``: an unknown host version or an image
    without one matches; otherwise major.minor must be equal, a host older than
    Windows Server 2022 (build 20348) needs the same build, and a newer host runs
    builds from 20348 up to its own (the stable ABI of LTSC 2022 onwards).
    """
    host = _windows_version(host_version)
    if host == (0, 0, 0) or not image_version:
        return True
    image = _windows_version(image_version)
    if host[:2] != image[:2]:
        return False
    if host[2] < _WS2022:
        return host[2] == image[2]
    floor = max(r for r in _STABLE_ABI_RELEASES if host[2] >= r)
    return floor <= image[2] <= host[2]


_WS2022 = 20348
_STABLE_ABI_RELEASES = (_WS2022,)


def _windows_version(text: str) -> tuple[int, int, int]:
    """major.minor.build of a Windows version string; (0, 0, 0) when it does not parse (as containerd)."""
    if text.count(".") < 2:
        return (0, 0, 0)
    major, minor, build = (text.split(".") + [""])[:3]
    limits = ((major, 0xFF), (minor, 0xFF), (build, 0xFFFF))
    if not all(_GO_UINT.fullmatch(v) and int(v) <= top for v, top in limits):
        return (0, 0, 0)
    return (int(major), int(minor), int(build))


def _go_int(text: str) -> int | None:
    return int(text) if _GO_INT.fullmatch(text) else None


def _raise(exc: Exception) -> Platform:
    raise exc


def _decode(value: str) -> str:
    """An OS option as containerd decodes it: %XX escapes, refused when malformed."""
    if "%" not in value:
        return value
    if _ESCAPE.search(value):
        raise ValueError(f"bad escape in {value!r}")
    return unquote(value, errors="strict")


def _encode(value: str) -> str:
    return (value.replace("%", "%25").replace("+", "%2B").replace("(", "%28").replace(")", "%29")
            .replace("/", "%2F"))


def _normalise_os(os_: str) -> str:
    os_ = os_.lower()
    return "darwin" if os_ == "macos" else os_


def _normalise_arch(arch: str, variant: str) -> tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        if variant in ("8", "v8", "v8.0"):
            variant = ""
        elif variant in ("9", "9.0", "v9.0"):
            variant = "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = f"v{variant}"
    return arch, variant


def _normalise(os_: str, arch: str, variant: str) -> tuple[str, str, str]:
    arch, variant = _normalise_arch(arch, variant)
    return _normalise_os(os_), arch, variant


def parse_containerd_version(text: str) -> tuple[int, int]:
    """``1.7``, ``v2.0.5``, ``2.1`` -> (major, minor); raise UsageError."""
    match = re.fullmatch(r"v?([0-9]+)\.([0-9]+)(?:\.[0-9]+)?(?:[-+][0-9A-Za-z.-]*)?", text.strip())
    if match is None:
        raise UsageError(f"invalid containerd version {text!r}: expected MAJOR.MINOR, e.g. 1.7 or 2.1")
    return int(match.group(1)), int(match.group(2))


def exact_pull_match(runtime: str, containerd_version: str = DEFAULT_CONTAINERD_VERSION) -> bool:
    """Whether the runtime takes only the node's own platform from an index (containerd 2.1+'s transfer service).

    CRI-O and Docker are not containerd's CRI pull path and keep the fallbacks.
    """
    return runtime == "containerd" and parse_containerd_version(containerd_version) >= EXACT_PULL_SINCE


#: The node platform assumed when nothing (a flag, the config file, a cluster's nodes) says which.
DEFAULT_PLATFORMS: tuple[Platform, ...] = (Platform("linux", "amd64"),)


def parse_platforms(text: str | list[str] | tuple[str, ...]) -> list[Platform]:
    """Parse a comma-separated list (or several) of platforms, keeping order, dropping repeats."""
    items = [text] if isinstance(text, str) else list(text)
    out: list[Platform] = []
    for item in items:
        for part in item.split(","):
            if part.strip():
                out.append(Platform.parse(part))
    if not out:
        raise UsageError("no platform given: expected os/arch[/variant], e.g. linux/amd64")
    return list(dict.fromkeys(out))


def elf_machine_name(machine: int, elf_class: int) -> str:
    name = ELF_MACHINE_NAMES.get(machine, f"machine {machine}")
    if machine == 40 and elf_class == 64:
        return "ARM (64-bit class)"
    return name
