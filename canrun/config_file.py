"""``.canrun.yaml``: a repository's checked-in settings for ``canrun check``.

Found by walking up from the working directory (like ``.editorconfig``), or
named with ``--config``.  Command-line flags win over the file, the file wins
over built-in defaults.  The format is documented in docs/configuration-file.md::

    platforms: [linux/amd64, linux/arm64]
    runtime: containerd
    containerd_version: "2.1"      # 2.1+: exact platform matching; "2.0" or "1.7": with fallbacks
    snapshotter: overlayfs         # or native: how the nodes lay image layers out
    strict: false
    timeout: 30
    registries:
      insecure: [registry.local:5000]
      ca_file: certs/ca.pem          # relative paths are relative to this file
      docker_config: ~/.docker/config.json
      mirrors:
        docker.io: mirror.example.com/dockerhub
    rules:
      not-verified: off
      image-unresolvable: error
    cache_url: redis://canrun-redis:6379/0   # a cache shared with every replica (no password here)

Every mistake is one line naming the file and the key
(``/repo/.canrun.yaml: rules.command-nt-found: unknown rule id …``), because a
CI job that silently ignores a typo in its policy is worse than one that stops.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationError

from canrun.config import FILENAMES, REGISTRY_BACKENDS, RUNTIMES, FileConfig, find_config, rules_with_flags
from canrun.errors import UsageError
from canrun.exemptions import ALL, Exemption
from canrun.findings import RULES, Severity
from canrun.image.layout import SNAPSHOTTERS
from canrun.platform import Platform, parse_containerd_version
from canrun.registry.reference import DOCKER_HUB, DOCKER_HUB_API

LEVELS = ("error", "warning", "info", "off")
_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]+)?|\[[0-9A-Fa-f:.]+\](?::[0-9]+)?")
#: Other spellings of Docker Hub a mirror map may use; references always say ``docker.io``.
_HUB_ALIASES = {"index.docker.io": DOCKER_HUB, DOCKER_HUB_API: DOCKER_HUB}


def canonical_registry(host: str) -> str:
    return _HUB_ALIASES.get(host.lower(), host.lower())


def _level(value: object) -> object:
    # YAML 1.1 reads a bare `off` / `no` as false: that is what the user meant by it
    if value is False:
        return "off"
    return value.lower() if isinstance(value, str) else value


def _platform_list(value: object) -> object:
    # `platforms: linux/amd64,linux/arm64` reads like the --platform flag; accept it
    return [p for p in value.split(",") if p.strip()] if isinstance(value, str) else value


def _containerd_version(value: object) -> object:
    # YAML reads a bare 2.1 as a number; write "1.10" quoted (1.10 would read as 1.1)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        try:
            parse_containerd_version(value)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
    return value


class _Registries(BaseModel):
    model_config = ConfigDict(extra="forbid")

    insecure: list[str] = Field(default_factory=list)
    ca_file: str | None = None
    docker_config: str | None = None
    hosts_dir: str | None = None
    credential_provider_config: str | None = None
    credential_provider_bin_dir: str | None = None
    mirrors: dict[str, str] = Field(default_factory=dict)
    backend: Literal[REGISTRY_BACKENDS] | None = None  # type: ignore[valid-type]


class _Exception(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: Annotated[list[str], BeforeValidator(_platform_list)]
    namespace: str | None = None
    kind: str | None = None
    workload: str | None = None
    image: str | None = None
    expires: dt.date | None = None
    reason: str | None = None


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    platforms: Annotated[list[str] | None, BeforeValidator(_platform_list)] = None
    runtime: Literal[RUNTIMES] | None = None  # type: ignore[valid-type]
    containerd_version: Annotated[str | None, BeforeValidator(_containerd_version)] = None
    snapshotter: Literal[SNAPSHOTTERS] | None = None  # type: ignore[valid-type]
    strict: StrictBool | None = None
    timeout: float | None = Field(default=None, gt=0, le=3600)
    registries: _Registries = Field(default_factory=_Registries)
    rules: dict[str, Annotated[Literal["error", "warning", "info", "off"], BeforeValidator(_level)]] = Field(
        default_factory=dict)
    exclude: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    exceptions: list[_Exception] = Field(default_factory=list)
    cache_url: str | None = None


def discover(cwd: Path) -> FileConfig:
    found = find_config(cwd)
    return load_config(found) if found else FileConfig()


def load_config(path: Path) -> FileConfig:
    """Read and validate one config file; every problem is a one-line UsageError naming file and key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the config file: {exc}") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{where}: not valid YAML: {problem}") from exc
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: expected a mapping of settings at the top level, got {type(doc).__name__}")
    try:
        model = _File.model_validate(doc)
    except ValidationError as exc:
        raise UsageError(_problems(path, [_message(e) for e in exc.errors()])) from None
    return _convert(path, model)


def _problems(path: Path, messages: list[str]) -> str:
    """One problem on one line; several as one line each, all at once (fix them in one go)."""
    if len(messages) == 1:
        return f"{path}: {messages[0]}"
    return f"{path}: {len(messages)} problems:\n" + "\n".join(f"  {m}" for m in messages)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _message(error: Any) -> str:
    loc = _loc(tuple(p for p in error["loc"] if not str(p).startswith("function-")))
    if error["type"] == "extra_forbidden":
        parent = error["loc"][:-1]
        hint = _suggest(str(error["loc"][-1]), _known_keys(parent))
        return f"{loc}: unknown key{hint}"
    if error["type"] == "literal_error" and error["loc"][:1] == ("rules",):
        return f"{loc}: expected one of {', '.join(LEVELS)}, got {error['input']!r}"
    msg = error["msg"]
    msg = re.sub(r"^Input should be", "expected", msg)
    msg = re.sub(r"^Value error, ", "", msg)
    return f"{loc}: {msg}, got {error['input']!r}"


def _known_keys(parent: tuple[int | str, ...]) -> list[str]:
    model: type[BaseModel] = _File
    if parent == ("registries",):
        model = _Registries
    elif parent[:1] == ("exceptions",):
        model = _Exception
    return list(model.model_fields)


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    if close:
        return f" (did you mean {close[0]}?)"
    return f" (known keys: {', '.join(choices)})"


def _convert(path: Path, model: _File) -> FileConfig:
    """The validated model as ``FileConfig``; every remaining problem is collected, then reported at once."""
    base = path.parent
    problems: list[str] = []

    def relative(value: str | None) -> Path | None:
        if not value:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else (base / p)

    platforms = None
    if model.platforms is not None:
        if not model.platforms:
            problems.append("platforms: give at least one os/arch, or leave the key out")
        parsed = []
        for i, text in enumerate(model.platforms):
            try:
                parsed.append(Platform.parse(text))
            except UsageError as exc:
                problems.append(f"platforms[{i}]: {exc}")
        platforms = tuple(parsed)

    rules: dict[str, Severity | None] = {}
    for rule_id, level in model.rules.items():
        if rule_id not in RULES:
            problems.append(f"rules.{rule_id}: unknown rule id{_rule_hint(rule_id)}")
            continue
        rules[rule_id] = None if level == "off" else Severity(level)

    for i, host in enumerate(model.registries.insecure):
        _check_host(problems, f"registries.insecure[{i}]", host)
    mirrors: dict[str, str] = {}
    for registry, mirror in model.registries.mirrors.items():
        key = f"registries.mirrors.{registry}"
        _check_host(problems, key, registry)
        host, _, prefix = mirror.partition("/")
        if "://" in mirror:
            problems.append(f"{key}: write host[:port][/path], not a URL ({mirror!r})")
            continue
        _check_host(problems, key, host)
        mirrors[canonical_registry(registry)] = f"{host}/{prefix.strip('/')}".rstrip("/")

    exceptions = []
    for i, entry in enumerate(model.exceptions):
        key = f"exceptions[{i}]"
        if not entry.rules:
            problems.append(f"{key}.rules: name at least one rule id (or all)")
        for rule_id in entry.rules:
            if rule_id != ALL and rule_id not in RULES:
                problems.append(f"{key}.rules: unknown rule id {rule_id!r}{_rule_hint(rule_id)}")
        exceptions.append(Exemption(
            rules=frozenset(entry.rules), origin=f"{key} of {path.name}", namespace=entry.namespace, kind=entry.kind,
            name=entry.workload, image=entry.image, expires=entry.expires, reason=entry.reason))

    if model.cache_url is not None:
        from canrun.image.redis_store import parse_url

        try:
            url = parse_url(model.cache_url)
        except UsageError as exc:
            url = None
            problems.append(f"cache_url: {str(exc).removeprefix('--cache-url: ')}")
        if url is not None and url.password:
            problems.append("cache_url: a checked-in file must not hold the Redis password; give it with "
                            "--cache-password-file or $CANRUN_CACHE_PASSWORD")
    if problems:
        raise UsageError(_problems(path, problems))
    return FileConfig(
        path=path, platforms=platforms, runtime=model.runtime, containerd_version=model.containerd_version,
        snapshotter=model.snapshotter, strict=model.strict, timeout=model.timeout,
        insecure_registries=tuple(model.registries.insecure), ca_file=relative(model.registries.ca_file),
        docker_config=relative(model.registries.docker_config),
        hosts_dir=relative(model.registries.hosts_dir),
        credential_provider_config=relative(model.registries.credential_provider_config),
        credential_provider_bin_dir=relative(model.registries.credential_provider_bin_dir), mirrors=mirrors, rules=rules,
        exclude=tuple(model.exclude), exceptions=tuple(exceptions), registry_backend=model.registries.backend,
        cache_url=model.cache_url)


def _rule_hint(rule_id: str) -> str:
    hint = _suggest(rule_id, list(RULES))
    return hint if "did you mean" in hint else f" (known: {', '.join(RULES)})"


def _check_host(problems: list[str], key: str, host: str) -> None:
    if not _HOST.fullmatch(host):
        problems.append(f"{key}: {host!r} is not a registry host[:port]")


__all__ = ["FILENAMES", "FileConfig", "discover", "find_config", "load_config", "rules_with_flags"]
