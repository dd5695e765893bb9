"""Node and image platforms, normalised and matched the way containerd does it.

A node only reports ``kubernetes.io/os`` and ``kubernetes.io/arch``; an image
index entry carries os/architecture/variant.  containerd's ``platforms.Only``
decides which index entries a node will pull, in order of preference, and that
is the behaviour reproduced here (containerd's ``platforms`` package: ``Normalize``,
``Only`` and its ordered matcher):

* variants are only meaningful on ARM (and amd64 micro-architecture levels);
* ``aarch64``→``arm64``, ``arm64/v8``→``arm64``, ``amd64/v1``→``amd64``,
  ``armhf``→``arm/v7``, ``armel``→``arm/v6``, bare ``arm``→``arm/v7``;
* an amd64 node takes amd64 (its level and below), then 386;
* an arm64 node takes arm64, then arm/v8 … arm/v5.

The ELF table maps each architecture to the (class, machine, byte order) its
binaries must have: that is how a mislabeled image is caught.
"""

from __future__ import annotations

from dataclasses import dataclass

from canrun.errors import UsageError

_ARCH_ALIASES = {
    "x86_64": ("amd64", ""),
    "x86-64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "386": ("386", ""),
    "aarch64": ("arm64", ""),
    "arm64": ("arm64", ""),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
    "arm": ("arm", ""),
}

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
    """An os/architecture[/variant] triple, always held in normalised form."""

    os: str
    architecture: str
    variant: str = ""

    def __post_init__(self) -> None:
        os_, arch, variant = _normalise(self.os, self.architecture, self.variant)
        object.__setattr__(self, "os", os_)
        object.__setattr__(self, "architecture", arch)
        object.__setattr__(self, "variant", variant)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]`` (``linux/arm64``, ``linux/arm/v7``); raise UsageError."""
        parts = [p.strip() for p in text.strip().split("/")]
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"invalid platform {text!r}: expected os/arch[/variant], e.g. linux/arm64")
        return cls(*parts)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Platform:
        """Build from an OCI ``platform`` object or an image config (os/architecture/variant)."""
        return cls(str(data.get("os") or ""), str(data.get("architecture") or ""), str(data.get("variant") or ""))

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @property
    def elf_identity(self) -> tuple[int, int, bool] | None:
        return ELF_IDENTITY.get(self.architecture)

    def accepts(self) -> list[Platform]:
        """The image platforms a node of this platform runs, most preferred first."""
        out = [self]
        if self.architecture == "amd64":
            level = int(self.variant[1:]) if self.variant[1:].isdigit() else 1
            out += [Platform(self.os, "amd64", f"v{n}") for n in range(level - 1, 0, -1)]
            out.append(Platform(self.os, "386"))
        elif self.architecture == "arm64":
            out += [Platform(self.os, "arm", f"v{n}") for n in (8, 7, 6, 5)]
        elif self.architecture == "arm":
            level = int(self.variant[1:]) if self.variant[1:].isdigit() else 7
            out += [Platform(self.os, "arm", f"v{n}") for n in range(level - 1, 4, -1)]
        return list(dict.fromkeys(out))

    def match_rank(self, image: Platform) -> int | None:
        """Preference rank of ``image`` for a node of this platform (0 best), None if not runnable."""
        for rank, candidate in enumerate(self.accepts()):
            if candidate == image:
                return rank
        return None

    def runs_elf(self, elf_class: int, machine: int, little_endian: bool) -> bool:
        """Whether a node of this platform can execute an ELF of this identity."""
        for candidate in self.accepts():
            if candidate.elf_identity == (elf_class, machine, little_endian):
                return True
        return False


def _normalise(os_: str, arch: str, variant: str) -> tuple[str, str, str]:
    os_ = os_.lower()
    arch = arch.lower()
    variant = variant.lower()
    base, implied = _ARCH_ALIASES.get(arch, (arch, ""))
    variant = variant or implied
    if base == "arm64" and variant == "v8":
        variant = ""
    elif base == "amd64" and variant == "v1":
        variant = ""
    elif base == "arm" and not variant:
        variant = "v7"
    elif base == "arm" and variant.isdigit():
        variant = f"v{variant}"
    return os_, base, variant


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
