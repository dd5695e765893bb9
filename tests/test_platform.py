"""Platform normalisation and matching follow containerd's platforms package."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from canrun.errors import ImageCorrupt, UsageError
from canrun.platform import Platform, exact_pull_match, parse_containerd_version, parse_platforms


@pytest.mark.parametrize(
    "text, expected",
    [
        ("linux/amd64", ("linux", "amd64", "")),
        ("linux/x86_64", ("linux", "amd64", "")),
        ("linux/amd64/v1", ("linux", "amd64", "")),
        ("linux/amd64/v3", ("linux", "amd64", "v3")),
        ("linux/aarch64", ("linux", "arm64", "")),
        ("linux/arm64/v8", ("linux", "arm64", "")),
        ("linux/armhf", ("linux", "arm", "v7")),
        ("linux/armel", ("linux", "arm", "v6")),
        ("linux/arm", ("linux", "arm", "v7")),
        ("Linux/ARM64", ("linux", "arm64", "")),
        ("linux/i386", ("linux", "386", "")),
        ("windows/amd64", ("windows", "amd64", "")),
        ("linux", ("linux", "amd64", "")),
        ("arm64", ("linux", "arm64", "")),
        ("linux/arm64/v8.0", ("linux", "arm64", "")),
        ("linux/arm64/9", ("linux", "arm64", "v9")),
        ("macOS/arm64", ("darwin", "arm64", "")),
    ],
)
def test_normalisation(text: str, expected: tuple[str, str, str]) -> None:
    p = Platform.parse(text)
    assert (p.os, p.architecture, p.variant) == expected


@pytest.mark.parametrize("bad", ["", "plan10", "linux/", "/amd64", "a/b/c/d", "linux/*"])
def test_bad_platform_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError, match="os/arch"):
        Platform.parse(bad)


def test_amd64_node_prefers_amd64_then_386() -> None:
    node = Platform("linux", "amd64")
    assert node.match_rank(Platform("linux", "amd64")) == 0
    assert node.match_rank(Platform("linux", "386")) == 1
    assert node.match_rank(Platform("linux", "arm64")) is None
    assert node.match_rank(Platform("windows", "amd64")) is None


def test_amd64_levels_take_lower_levels_only() -> None:
    v2 = Platform("linux", "amd64", "v2")
    assert v2.match_rank(Platform("linux", "amd64", "v3")) is None
    assert v2.match_rank(Platform("linux", "amd64")) is not None
    assert Platform("linux", "amd64").match_rank(Platform("linux", "amd64", "v2")) is None


def test_arm64_node_falls_back_to_32bit_arm() -> None:
    node = Platform("linux", "arm64")
    ranks = [node.match_rank(Platform.parse(p)) for p in ("linux/arm64", "linux/arm/v8", "linux/arm/v7",
                                                         "linux/arm/v6", "linux/arm/v5")]
    assert ranks == sorted(ranks) and None not in ranks
    assert node.match_rank(Platform("linux", "amd64")) is None


def test_exact_match_takes_the_node_platform_only() -> None:
    """containerd 2.1+'s transfer service: no 386 for amd64, no 32-bit arm for arm64."""
    amd64, arm64 = Platform("linux", "amd64"), Platform("linux", "arm64")
    assert amd64.match_rank(Platform("linux", "386"), exact=True) is None
    assert arm64.match_rank(Platform("linux", "arm", "v7"), exact=True) is None
    assert arm64.match_rank(Platform("linux", "aarch64", "8"), exact=True) == 0


def test_exact_pull_match_by_runtime_version() -> None:
    assert exact_pull_match("containerd", "2.1") and exact_pull_match("containerd", "v2.2.0")
    assert not exact_pull_match("containerd", "2.0") and not exact_pull_match("containerd", "1.7.27")
    assert not exact_pull_match("cri-o", "2.1") and not exact_pull_match("docker", "2.1")
    with pytest.raises(UsageError, match="containerd version"):
        parse_containerd_version("latest")


def test_index_platform_fields_are_typed_as_go_decodes_them() -> None:
    assert Platform.from_dict({"os": "linux", "architecture": "amd64", "os.features": ["b", "a", "b"]}).os_features \
        == ("a", "b")
    for bad in ({"os.features": "gpu"}, {"os.features": [1]}, {"os.version": 10}):
        with pytest.raises(ImageCorrupt):
            Platform.from_dict({"os": "linux", "architecture": "amd64", **bad})


def test_arm_v6_node_does_not_take_v7() -> None:
    assert Platform("linux", "arm", "v6").match_rank(Platform("linux", "arm", "v7")) is None
    assert Platform("linux", "arm", "v7").match_rank(Platform("linux", "arm", "v6")) is not None


def test_runs_elf() -> None:
    amd64 = Platform("linux", "amd64")
    assert amd64.runs_elf(64, 62, True)  # x86-64
    assert amd64.runs_elf(32, 3, True)  # i386 via the 386 fallback
    assert not amd64.runs_elf(64, 183, True)  # AArch64
    arm64 = Platform("linux", "arm64")
    assert arm64.runs_elf(64, 183, True)
    assert arm64.runs_elf(32, 40, True)
    assert not arm64.runs_elf(64, 62, True)


def test_parse_platforms_splits_dedups_and_keeps_order() -> None:
    assert [str(p) for p in parse_platforms(["linux/arm64,linux/amd64", "linux/aarch64"])] == [
        "linux/arm64", "linux/amd64"]
    with pytest.raises(UsageError):
        parse_platforms([" , "])


@given(st.sampled_from(["amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64"]),
       st.sampled_from(["", "v5", "v6", "v7", "v8", "v2", "v3"]))
def test_str_parse_round_trip_and_node_accepts_itself(arch: str, variant: str) -> None:
    p = Platform("linux", arch, variant)
    assert Platform.parse(str(p)) == p
    assert p.match_rank(p) == 0
