"""The ``.canrun.yaml`` loader, the rule overrides and the mirror rewrite, below the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from canrun.config import MirroredBackend, apply_rule_overrides
from canrun.config_file import FileConfig, discover, find_config, load_config, rules_with_flags
from canrun.errors import UsageError
from canrun.findings import Severity, finding
from canrun.platform import Platform
from canrun.registry.reference import Reference
from canrun.validator import Report


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_found_in_the_nearest_directory_up(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    assert find_config(deep) is None
    outer = write(tmp_path / ".canrun.yaml", "strict: true\n")
    assert find_config(deep) == outer
    inner = write(tmp_path / "a" / ".canrun.yml", "strict: false\n")
    assert find_config(deep) == inner
    assert discover(deep).strict is False
    assert discover(tmp_path).strict is True


def test_no_file_means_no_settings(tmp_path: Path) -> None:
    assert discover(tmp_path) == FileConfig()


def test_empty_file_is_fine(tmp_path: Path) -> None:
    assert load_config(write(tmp_path / "c.yaml", "# nothing yet\n")).rules == {}


def test_every_key(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / ".canrun.yaml", """\
version: 1
platforms: [linux/amd64, linux/aarch64]
runtime: cri-o
snapshotter: native
strict: true
timeout: 12.5
registries:
  insecure: [registry.local:5000, "[::1]:5000"]
  ca_file: certs/ca.pem
  docker_config: /etc/docker/config.json
  mirrors:
    index.docker.io: mirror.example.com/hub/
    ghcr.io: 127.0.0.1:5001
rules:
  not-verified: off
  image-unresolvable: ERROR
  exec-format: warning
"""))
    assert cfg.platforms == (Platform("linux", "amd64"), Platform("linux", "arm64"))
    assert (cfg.runtime, cfg.strict, cfg.timeout) == ("cri-o", True, 12.5)
    assert cfg.snapshotter == "native"
    assert cfg.insecure_registries == ("registry.local:5000", "[::1]:5000")
    assert cfg.ca_file == tmp_path / "certs" / "ca.pem"  # relative to the file, not the cwd
    assert cfg.docker_config == Path("/etc/docker/config.json")
    assert cfg.mirrors == {"docker.io": "mirror.example.com/hub", "ghcr.io": "127.0.0.1:5001"}
    assert cfg.rules == {"not-verified": None, "image-unresolvable": Severity.ERROR, "exec-format": Severity.WARNING}


def test_platforms_as_one_string_like_the_flag(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "c.yaml", "platforms: linux/amd64,linux/arm/v7\n"))
    assert [str(p) for p in cfg.platforms or ()] == ["linux/amd64", "linux/arm/v7"]


@pytest.mark.parametrize("text, message", [
    ("strict: maybe\n", "strict: expected a valid boolean, got 'maybe'"),
    ("timeout: 0\n", "timeout: expected greater than 0"),
    ("snapshotter: zfs\n", "snapshotter: expected 'overlayfs' or 'native'"),
    ("version: 2\n", "version: expected 1"),
    ("registries: {insecure: ['http://x']}\n", "registries.insecure[0]: 'http://x' is not a registry host[:port]"),
    ("registries: {mirrors: {docker.io: 'https://m.example'}}\n", "write host[:port][/path], not a URL"),
    ("rules: {exec-format: true}\n", "rules.exec-format: expected one of error, warning, info, off, got True"),
    ("rules: {bogus: error}\n", "rules.bogus: unknown rule id (known: platform-missing,"),
    ("platforms: []\n", "platforms: give at least one os/arch"),
    ("- a\n- b\n", "expected a mapping of settings at the top level, got list"),
    ("strict: true\nrulez: {}\nplatform: x\n", "rulez: unknown key (did you mean rules?) (and 1 more problem)"),
])
def test_mistakes_are_one_line_with_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / ".canrun.yaml", text)
    with pytest.raises(UsageError) as exc:
        load_config(path)
    assert str(exc.value).startswith(f"{path}: ")
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / ".canrun.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(UsageError, match="cannot read the config file"):
        load_config(path)


def test_explicit_strict_flag_decides_image_unresolvable() -> None:
    rules = {"image-unresolvable": Severity.WARNING, "not-verified": None}
    assert rules_with_flags(rules, strict_flag=None) == rules
    assert rules_with_flags(rules, strict_flag=True) == {"not-verified": None}
    assert rules_with_flags(rules, strict_flag=False) == {"not-verified": None}


def test_rule_overrides_change_severity_or_drop() -> None:
    a = finding("exec-format", "a")
    b = finding("not-verified", "b")
    c = finding("image-unresolvable", "c")
    report = Report(findings=[a, b, c], suppressed=[finding("not-verified", "d")], workloads=1)
    out = apply_rule_overrides(report, {"exec-format": Severity.WARNING, "not-verified": None,
                                        "image-unresolvable": Severity.ERROR})
    assert [(f.rule, f.severity) for f in out.findings] == [("image-unresolvable", Severity.ERROR),
                                                           ("exec-format", Severity.WARNING)]
    assert out.suppressed == [] and out.workloads == 1
    assert [f.rule for f in out.errors] == ["image-unresolvable"]
    assert apply_rule_overrides(report, {}) is report


class _Recorder:
    def __init__(self) -> None:
        self.refs: list[Reference] = []

    async def resolve(self, ref: Reference) -> str:
        self.refs.append(ref)
        return "ok"


async def test_mirrored_backend_rewrites_only_mirrored_registries() -> None:
    inner = _Recorder()
    backend = MirroredBackend(inner, {"docker.io": "mirror.example.com/hub", "ghcr.io": "127.0.0.1:5001"})  # type: ignore[arg-type]
    await backend.resolve(Reference.parse("nginx:1.27"))
    await backend.resolve(Reference.parse("ghcr.io/org/app@sha256:" + "a" * 64))
    await backend.resolve(Reference.parse("quay.io/org/app:1"))
    assert [str(r) for r in inner.refs] == [
        "mirror.example.com/hub/library/nginx:1.27",
        "127.0.0.1:5001/org/app@sha256:" + "a" * 64,
        "quay.io/org/app:1",
    ]


def test_the_documented_example_loads(tmp_path: Path) -> None:
    """docs/configuration-file.md's example is a file users copy: it must stay valid."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration-file.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    cfg = load_config(write(tmp_path / ".canrun.yaml", example))
    assert cfg.rules["not-verified"] is None and cfg.mirrors["docker.io"] == "mirror.example.com/dockerhub"


def test_snapshotter_from_the_flag_over_the_file_reaches_the_image_store(tmp_path: Path) -> None:
    from canrun.config import compose

    assert compose("check", {}).nodes.snapshotter == "overlayfs"  # containerd's default
    assert compose("check", {}, FileConfig(snapshotter="native")).nodes.snapshotter == "native"
    assert compose("check", {"nodes.snapshotter": "overlayfs"}, FileConfig(snapshotter="native")).nodes.snapshotter == \
        "overlayfs"


async def test_open_engine_hands_the_snapshotter_to_the_image_store(tmp_path: Path) -> None:
    from canrun.config import compose, open_engine

    settings = compose("check", {"nodes.snapshotter": "native", "cache.dir": str(tmp_path)})
    async with open_engine(settings) as engine:
        assert engine.store.snapshotter == "native"
