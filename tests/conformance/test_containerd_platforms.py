"""containerd's own platform tables, run against canrun's ``Platform``.

Each table below is data transcribed from containerd's ``platforms`` package
(github.com/containerd/platforms); the file and the commit it was read at are
named above each table.  When containerd moves, re-read those files and update
the tables: the test then says where canrun disagrees.

The Go tests parse both sides with ``platforms.Parse`` and ask
``Only(p).Match(q)`` / ``OnlyStrict(p).Match(q)``; here both sides go through
``Platform.parse`` and ``match_rank`` (``exact=True`` is ``OnlyStrict``, which is
also what containerd 2.1+'s transfer service applies to the node's platform).
The parser table's ``defaultOS``/``defaultArch`` (the machine containerd runs
on) are canrun's default node, linux/amd64.
"""

from __future__ import annotations

import pytest

from canrun.errors import UsageError
from canrun.platform import DEFAULT_ARCH, DEFAULT_OS, Platform, windows_runs

# --- compare_test.go, TestOnly / TestOnlyStrict -------------------------------------------------
# containerd/platforms compare_test.go @ 0cdbb8bdfe4c2a1864933b024eb12fc6ed5fb0db
# (compare.go @ 122d4d057f95e34b5083669cb9a47cf6de5831a8). node -> (matched, not matched).

ONLY: dict[str, tuple[list[str], list[str]]] = {
    "linux/amd64": (["linux/amd64", "linux/386"],
                    ["linux/amd64/v2", "linux/arm/v7", "linux/arm64", "windows/amd64", "windows/arm"]),
    "linux/amd64/v2": (["linux/amd64", "linux/amd64/v1", "linux/amd64/v2", "linux/386"],
                       ["linux/amd64/v3", "linux/amd64/v4", "linux/arm/v7", "linux/arm64", "windows/amd64",
                        "windows/arm"]),
    "linux/386": (["linux/386"], ["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/amd64", "windows/arm"]),
    "windows/amd64": (["windows/amd64", "windows(10.0.17763)/amd64"],
                      ["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/arm"]),
    "linux/arm/v8": (["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8"],
                     ["linux/amd64", "linux/arm/v4", "linux/arm64", "windows/amd64", "windows/arm"]),
    "linux/arm/v7": (["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7"],
                     ["linux/amd64", "linux/arm/v4", "linux/arm/v8", "linux/arm64", "windows/amd64", "windows/arm"]),
    "linux/arm/v6": (["linux/arm/v5", "linux/arm/v6"],
                     ["linux/amd64", "linux/arm", "linux/arm/v4", "linux/arm/v7", "linux/arm/v8", "linux/arm64",
                      "windows/amd64", "windows/arm"]),
    "linux/arm/v5": (["linux/arm/v5"],
                     ["linux/amd64", "linux/arm", "linux/arm/v4", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8",
                      "linux/arm64", "windows/amd64", "windows/arm"]),
    "linux/arm/v4": (["linux/arm/v4"],
                     ["linux/amd64", "linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8",
                      "linux/arm64", "windows/amd64", "windows/arm"]),
    "linux/arm64/v9": (["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8", "linux/arm64",
                        "linux/arm64/v8", "linux/arm64/v8.1", "linux/arm64/v8.2", "linux/arm64/v8.3",
                        "linux/arm64/v8.4", "linux/arm64/v8.5", "linux/arm64/v9", "linux/arm64/v9.0"],
                       ["linux/amd64", "linux/arm/v4", "windows/amd64", "windows/arm", "linux/arm64/v8.6"]),
    "linux/arm64/v8.1": (["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8", "linux/arm64",
                          "linux/arm64/v8", "linux/arm64/v8.1"],
                         ["linux/amd64", "linux/arm/v4", "linux/arm/v9", "linux/arm64/v9", "windows/amd64",
                          "windows/arm"]),
    "linux/arm64": (["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8", "linux/arm64",
                     "linux/arm64/v8"],
                    ["linux/amd64", "linux/arm/v4", "linux/arm/v9", "linux/arm64/v9", "windows/amd64", "windows/arm"]),
}

ONLY_STRICT: dict[str, tuple[list[str], list[str]]] = {
    "linux/amd64": (["linux/amd64"], ["linux/386", "linux/arm/v7", "linux/arm64", "windows/amd64", "windows/arm"]),
    "linux/386": (["linux/386"], ["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/amd64", "windows/arm"]),
    "windows/amd64": (["windows/amd64", "windows(10.0.17763)/amd64"],
                      ["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/arm"]),
    "windows(10.0.17763)/amd64": (["windows/amd64", "windows(10.0.17763)/amd64"],
                                  ["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/arm"]),
    "linux/arm/v8": (["linux/arm/v8"],
                     ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/amd64", "linux/arm/v4",
                      "linux/arm64", "windows/amd64", "windows/arm"]),
    "linux/arm/v7": (["linux/arm", "linux/arm/v7"],
                     ["linux/arm/v5", "linux/arm/v6", "linux/amd64", "linux/arm/v4", "linux/arm/v8", "linux/arm64",
                      "windows/amd64", "windows/arm"]),
    "linux/arm/v6": (["linux/arm/v6"],
                     ["linux/arm/v5", "linux/amd64", "linux/arm", "linux/arm/v4", "linux/arm/v7", "linux/arm/v8",
                      "linux/arm64", "windows/amd64", "windows/arm"]),
    "linux/arm/v5": (["linux/arm/v5"],
                     ["linux/amd64", "linux/arm", "linux/arm/v4", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8",
                      "linux/arm64", "windows/amd64", "windows/arm"]),
    "linux/arm/v4": (["linux/arm/v4"],
                     ["linux/amd64", "linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8",
                      "linux/arm64", "windows/amd64", "windows/arm"]),
    "linux/arm64/v9": (["linux/arm64/v9", "linux/arm64/v9.0"],
                       ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8", "linux/amd64",
                        "linux/arm/v4", "linux/arm/v9", "linux/arm64/v8", "linux/arm64/v8.1", "windows/amd64",
                        "windows/arm"]),
    "linux/arm64/v8.1": (["linux/arm64/v8.1"],
                         ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8", "linux/amd64",
                          "linux/arm/v4", "linux/arm/v9", "linux/arm64/v8", "linux/arm64/v9", "windows/amd64",
                          "windows/arm"]),
    "linux/arm64": (["linux/arm64", "linux/arm64/v8"],
                    ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8", "linux/amd64",
                     "linux/arm/v4", "linux/arm/v9", "linux/arm64/v9", "windows/amd64", "windows/arm"]),
}


def _cases(table: dict[str, tuple[list[str], list[str]]]) -> list[tuple[str, str, bool]]:
    return [(node, image, want) for node, (yes, no) in table.items()
            for want, images in ((True, yes), (False, no)) for image in images]


ONLY_CASES = _cases(ONLY)
STRICT_CASES = _cases(ONLY_STRICT)


def test_table_sizes() -> None:
    """The transcription is whole: 125 Only and 114 OnlyStrict pairs at the commit above."""
    assert (len(ONLY_CASES), len(STRICT_CASES)) == (125, 114)


@pytest.mark.parametrize("node, image, want", ONLY_CASES)
def test_only(node: str, image: str, want: bool) -> None:
    assert (Platform.parse(node).match_rank(Platform.parse(image)) is not None) is want


@pytest.mark.parametrize("node, image, want", STRICT_CASES)
def test_only_strict(node: str, image: str, want: bool) -> None:
    assert (Platform.parse(node).match_rank(Platform.parse(image), exact=True) is not None) is want


def test_only_prefers_in_platform_vector_order() -> None:
    """compare.go's doc: arm64/v9.x takes v9.{x-1..0}, then v8.{x+5..0}, then 32-bit arm; ranks follow that order."""
    node = Platform.parse("linux/arm64/v9.1")
    order = ["linux/arm64/v9.1", "linux/arm64/v9", "linux/arm64/v8.6", "linux/arm64/v8.5", "linux/arm64/v8.1",
             "linux/arm64", "linux/arm/v8", "linux/arm/v7", "linux/arm/v5"]
    ranks = [node.match_rank(Platform.parse(p)) for p in order]
    assert None not in ranks and ranks == sorted(ranks)
    assert node.match_rank(Platform.parse("linux/arm64/v9.2")) is None
    assert node.match_rank(Platform.parse("linux/arm64/v8.7")) is None


# --- platforms_test.go, TestParseSelector / TestParseSelectorInvalid ----------------------------
# containerd/platforms platforms_test.go @ 042728d8c89bb01c02e934a842122e121f097041; the two
# windows(...)/amd64 and macos(...)/aarch64 cases from the same file @ 73585579ee312dad0a269a33f39ae9d9bc6b1cce.
# input -> (expected os, os.version, os.features, arch, variant, [platforms the parsed matcher matches]).
# "D" stands for the table's defaultOS / defaultArch. The three wildcard cases are skipped there too.

D = "D"
ParseCase = tuple[str, tuple[str, str, tuple[str, ...], str, str], list[tuple[str, str, str]]]
PARSE_SELECTOR: list[ParseCase] = [
    ("linux/arm64", ("linux", "", (), "arm64", ""),
     [("linux", "aarch64", ""), ("linux", "aarch64", "v8"), ("linux", "arm64", "v8")]),
    ("linux/arm64/v8", ("linux", "", (), "arm64", "v8"),
     [("linux", "aarch64", ""), ("linux", "aarch64", "v8"), ("linux", "arm64", "")]),
    ("linux/arm", ("linux", "", (), "arm", ""),
     [("linux", "arm", "v7"), ("linux", "armhf", ""), ("linux", "arm", "7")]),
    ("linux/arm/v6", ("linux", "", (), "arm", "v6"), [("linux", "armel", "")]),
    ("linux/arm/v7", ("linux", "", (), "arm", "v7"), [("linux", "arm", ""), ("linux", "armhf", "")]),
    ("arm", (D, "", (), "arm", ""), []),
    ("armel", (D, "", (), "arm", "v6"), []),
    ("armhf", (D, "", (), "arm", ""), []),
    ("Aarch64", (D, "", (), "arm64", ""), []),
    ("x86_64", (D, "", (), "amd64", ""), []),
    ("Linux/x86_64", ("linux", "", (), "amd64", ""), []),
    ("i386", (D, "", (), "386", ""), []),
    ("linux", ("linux", "", (), D, ""), []),
    ("s390x", (D, "", (), "s390x", ""), []),
    ("linux/s390x", ("linux", "", (), "s390x", ""), []),
    ("macOS", ("darwin", "", (), D, ""), []),
    ("windows", ("windows", "", (), D, ""), []),
    ("windows()", ("windows", "", (), D, ""), []),
    ("windows(10.0.17763)", ("windows", "10.0.17763", (), D, ""), []),
    ("windows(10.0.17763+win32k)", ("windows", "10.0.17763", ("win32k",), D, ""), []),
    ("linux(+gpu)", ("linux", "", ("gpu",), D, ""), []),
    ("linux(+gpu+simd)", ("linux", "", ("gpu", "simd"), D, ""), []),
    ("linux(+unsorted+erofs)", ("linux", "", ("unsorted", "erofs"), D, ""), []),
    ("windows(10.0.17763%2Bbuild.42)", ("windows", "10.0.17763+build.42", (), D, ""), []),
    ("windows(10.0.17763%2Bbuild.42+win32k)", ("windows", "10.0.17763+build.42", ("win32k",), D, ""), []),
    ("windows(50%25done)", ("windows", "50%done", (), D, ""), []),
    ("windows(10.0.17763)/amd64", ("windows", "10.0.17763", (), "amd64", ""), []),
    ("macos(Abcd.Efgh.123-4)/aarch64", ("darwin", "Abcd.Efgh.123-4", (), "arm64", ""), []),
]

PARSE_INVALID = ["", "/linux/arm", "linux/arm/", "linux /arm", "linux/&arm", "linux/arm/foo/bar",
                 "amd64/windows(10.0.17763)/foo", "linux)()---()..../arm/foo", "../arm/foo"]


@pytest.mark.parametrize("text, expected, matches", PARSE_SELECTOR, ids=[c[0] for c in PARSE_SELECTOR])
def test_parse_selector(text: str, expected: tuple[str, str, tuple[str, ...], str, str],
                        matches: list[tuple[str, str, str]]) -> None:
    os_, version, features, arch, variant = expected
    want = Platform(DEFAULT_OS if os_ == D else os_, DEFAULT_ARCH if arch == D else arch, variant, version, features)
    got = Platform.parse(text)
    assert got == want
    assert got.match_rank(want, exact=True) == 0
    for os_, arch, variant in matches:  # raw, un-normalised platforms, as an index entry would carry them
        assert got.match_rank(Platform(os_, arch, variant), exact=True) == 0
    assert Platform.parse(str(got)) == got  # what canrun prints parses back to the same platform


@pytest.mark.parametrize("text", PARSE_INVALID)
def test_parse_selector_invalid(text: str) -> None:
    with pytest.raises(UsageError, match="invalid platform"):
        Platform.parse(text)


# --- database.go, normalizeOS / normalizeArch ---------------------------------------------------
# containerd/platforms database.go @ c32f64955de935360dea57a9b9f630d5202c9e34: (arch, variant) -> normalised.

NORMALIZE_ARCH = [
    (("i386", "v7"), ("386", "")), (("x86_64", ""), ("amd64", "")), (("x86-64", "v1"), ("amd64", "")),
    (("AMD64", "V3"), ("amd64", "v3")), (("aarch64", ""), ("arm64", "")), (("arm64", "8"), ("arm64", "")),
    (("arm64", "v8"), ("arm64", "")), (("arm64", "v8.0"), ("arm64", "")), (("arm64", "9"), ("arm64", "v9")),
    (("arm64", "9.0"), ("arm64", "v9")), (("arm64", "v9.0"), ("arm64", "v9")), (("arm64", "v8.2"), ("arm64", "v8.2")),
    (("armhf", ""), ("arm", "v7")), (("armhf", "v6"), ("arm", "v7")), (("armel", ""), ("arm", "v6")),
    (("arm", ""), ("arm", "v7")), (("arm", "7"), ("arm", "v7")), (("arm", "5"), ("arm", "v5")),
    (("arm", "6"), ("arm", "v6")), (("arm", "8"), ("arm", "v8")), (("arm", "4"), ("arm", "4")),
    (("i686", ""), ("i686", "")), (("ppc64le", ""), ("ppc64le", "")),
]


@pytest.mark.parametrize("raw, want", NORMALIZE_ARCH)
def test_normalize_arch(raw: tuple[str, str], want: tuple[str, str]) -> None:
    p = Platform("linux", *raw)
    assert (p.architecture, p.variant) == want


@pytest.mark.parametrize("raw, want", [("Linux", "linux"), ("macOS", "darwin"), ("macos", "darwin"),
                                       ("WINDOWS", "windows"), ("darwin", "darwin")])
def test_normalize_os(raw: str, want: str) -> None:
    assert Platform(raw, "amd64").os == want


# --- platform_windows_compat_test.go, Test_PlatformCompat ---------------------------------------
# containerd/platforms platform_windows_compat_test.go @ 1abe0f97e5c0002d41be570c24f630b071800b62.

RS5, WS2022, WIN11_22H2 = 17763, 20348, 22621
WINDOWS_COMPAT = [(RS5, RS5, True), (RS5, WS2022, False), (WS2022, RS5, False), (WS2022, WS2022, True),
                  (WIN11_22H2, RS5, False), (WIN11_22H2, WS2022, True)]


@pytest.mark.parametrize("host, image, runs", WINDOWS_COMPAT)
def test_windows_host_and_container_compat(host: int, image: int, runs: bool) -> None:
    assert windows_runs(f"10.0.{host}", f"10.0.{image}") is runs
    node = Platform("windows", "amd64", os_version=f"10.0.{host}")
    entry = Platform("windows", "amd64", os_version=f"10.0.{image}.1234")
    assert (node.match_rank(entry) is not None) is runs


def test_windows_version_unknown_on_either_side_matches() -> None:
    """windowsVersionMatcher.Match: an empty host version or an image without os.version always matches."""
    assert windows_runs("", "10.0.20348")
    assert windows_runs("10.0.17763", "")
    assert not windows_runs("10.0.17763", "garbage")  # unparsable image version is 0.0.0: major differs


# --- platforms.go, matcher.Match and os.features ------------------------------------------------
# containerd/platforms platforms.go @ 01651306b81698ca45b6196e86aa0b82292332eb: an image platform's
# OSFeatures must be a subset of the matcher's; the matcher of a Linux node (DefaultSpec) has none.
# These cases are read off that code (the stored revisions carry no TestOnlyOS/TestCompareOSFeatures).

OS_FEATURES = [
    ("linux/amd64", "linux/amd64", True),
    ("linux/amd64", "linux(+gpu)/amd64", False),
    ("linux(+gpu)/amd64", "linux/amd64", True),
    ("linux(+gpu)/amd64", "linux(+gpu)/amd64", True),
    ("linux(+gpu)/amd64", "linux(+gpu+simd)/amd64", False),
    ("linux(+simd+gpu)/amd64", "linux(+gpu+simd)/amd64", True),
    ("linux(+gpu+simd)/amd64", "linux(+simd)/amd64", True),
    ("windows(10.0.17763+win32k)/amd64", "windows(10.0.17763)/amd64", True),
    ("windows(10.0.17763)/amd64", "windows(10.0.17763+win32k)/amd64", False),
    ("linux/arm64", "linux(+gpu)/arm/v7", False),
    ("linux(+gpu)/arm64", "linux(+gpu)/arm/v7", True),
]


@pytest.mark.parametrize("node, image, want", OS_FEATURES)
def test_os_features_are_a_subset_of_the_nodes(node: str, image: str, want: bool) -> None:
    n, i = Platform.parse(node), Platform.parse(image)
    assert (n.match_rank(i) is not None) is want
    if n.architecture == i.architecture:
        assert (n.match_rank(i, exact=True) is not None) is want


def test_os_version_is_ignored_on_linux_nodes() -> None:
    assert Platform.parse("linux/amd64").match_rank(Platform("linux", "amd64", os_version="6.1")) == 0


# --- platform_windows_compat_test.go, Test_PlatformOrder ----------------------------------------
# Same file and commit as Test_PlatformCompat: which entry a Windows host takes (defaults_windows.go:
# Default() is windowsMatchComparer, preferring the greater os.version among matching entries).

WS2022_P = ("windows", "10.0.20348.3091")
WS2025_P = ("windows", "10.0.26100.2894")
WS2025_REV3000_P = ("windows", "10.0.26100.3000")
LINUX_P = ("linux", "")
PLATFORM_ORDER = [
    ("Windows Server 2022 should select 2022", WS2022_P, [LINUX_P, WS2022_P, WS2025_P], WS2022_P),
    ("Windows Server 2025 should select 2025", WS2025_P, [LINUX_P, WS2022_P, WS2025_P], WS2025_P),
    ("Windows Server 2025 should select 2025 latest rev", WS2025_P, [LINUX_P, WS2022_P, WS2025_REV3000_P],
     WS2025_REV3000_P),
]


@pytest.mark.parametrize("name, host, entries, want", PLATFORM_ORDER, ids=[c[0] for c in PLATFORM_ORDER])
def test_windows_host_takes_the_newest_version_it_runs(name: str, host: tuple[str, str],
                                                       entries: list[tuple[str, str]], want: tuple[str, str]) -> None:
    from canrun.image.manifest import ImageIndex, select_manifest
    from canrun.registry.base import Descriptor
    from canrun.registry.mediatypes import OCI_INDEX, OCI_MANIFEST

    descriptors = [Descriptor(OCI_MANIFEST, f"sha256:{i:064x}", 1, platform=Platform(os_, "amd64", os_version=v))
                   for i, (os_, v) in enumerate(entries)]
    index = ImageIndex(Descriptor(OCI_INDEX, "sha256:" + "f" * 64, 1), descriptors)
    node = Platform(host[0], "amd64", os_version=host[1])
    chosen = select_manifest(index, node)
    assert chosen is not None and chosen.platform is not None
    assert (chosen.platform.os, chosen.platform.os_version) == want
    # containerd 2.1+'s transfer service (Ordered): the first entry the host runs, in index order (2022's here)
    first = select_manifest(index, node, exact=True)
    assert first is not None and first.platform is not None and first.platform.os_version == WS2022_P[1]


def test_windows_nodes_have_no_386_fallback() -> None:
    """defaults_windows.go: Default() is the node's platform alone, not platforms.Only's vector."""
    assert Platform.parse("windows/amd64").match_rank(Platform("windows", "386")) is None
    assert Platform.parse("linux/amd64").match_rank(Platform("linux", "386")) is not None
