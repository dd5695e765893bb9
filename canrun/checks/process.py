"""The process a container will run: argv, environment, PATH and working directory.

Composition follows the kubelet and containerd's CRI (``buildContainerSpec``):

* ``command`` replaces ENTRYPOINT and drops CMD; ``args`` replaces CMD; ``args``
  alone runs ENTRYPOINT with them; ``Entrypoint == [""]`` counts as absent;
  an empty list is the same as unset (protobuf cannot tell them apart);
  nothing at all is CreateContainerError "no command specified";
* the kubelet expands ``$(VAR)`` in ``command``/``args`` from the container's
  own env only (not the image's): ``$$`` is a literal ``$``, an unresolved
  ``$(X)`` stays literally ``$(X)``; a variable from ``valueFrom`` is unknowable
  here, so its use is reported as not verified rather than guessed;
* env: containerd's default PATH, overridden by the image Env, overridden by
  the container env (last duplicate wins);
* cwd: ``workingDir``, else the image WorkingDir, else ``/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from canrun.findings import Finding, finding
from canrun.image.model import ImageConfig
from canrun.spec import Container

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Process:
    argv: tuple[str, ...]
    #: Final environment; a value of None is unknowable (valueFrom, or built from one).
    env: dict[str, str | None]
    cwd: str
    #: Where argv[0] came from: "command", "ENTRYPOINT", "CMD".
    origin: str
    #: $(VAR) references in argv that depend on a valueFrom variable.
    unknown_vars: tuple[str, ...] = field(default=())

    @property
    def path_var(self) -> str | None:
        """The PATH the runtime searches (None: unknowable, from valueFrom)."""
        return self.env.get("PATH", "")

    def origin_phrase(self) -> str:
        return {"command": "the container's command", "args": "the container's args",
                "ENTRYPOINT": "the image ENTRYPOINT", "CMD": "the image CMD",
                "--path": "as given"}.get(self.origin, self.origin)


def expand(text: str, lookup: Callable[[str], str | None], unknown: list[str]) -> str:
    """The kubelet's ``expansion.Expand``: ``$(NAME)`` from ``lookup``; ``$$`` escapes; the rest is literal.

    ``lookup`` returning None means "not defined" (left as ``$(NAME)``); names
    whose value is unknowable are appended to ``unknown`` and left literal.
    """
    out: list[str] = []
    i, n = 0, len(text)
    checkpoint = 0
    while i < n:
        if text[i] == "$" and i + 1 < n:
            out.append(text[checkpoint:i])
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                advance = 1
            elif nxt == "(":
                close = text.find(")", i + 2)
                if close < 0:
                    out.append(text[i:])
                    advance = n - i - 1
                else:
                    name = text[i + 2:close]
                    value = lookup(name)
                    if value is _UNKNOWABLE:
                        unknown.append(name)
                        value = None
                    out.append(f"$({name})" if value is None else value)
                    advance = close - i
            else:
                out.append("$" + nxt)
                advance = 1
            i += advance
            checkpoint = i + 1
        i += 1
    out.append(text[checkpoint:])
    return "".join(out)


class _Unknowable(str):
    """Marker value for a variable whose value canrun cannot know."""


_UNKNOWABLE = _Unknowable("")


def container_env(container: Container) -> dict[str, str | None]:
    """The container env as the kubelet builds it: values expanded in order, last duplicate wins; None = unknowable."""
    env: dict[str, str | None] = {}
    for var in container.env:
        if var.value is None:
            env[var.name] = None
            continue
        unknown: list[str] = []
        value = expand(var.value, lambda name: _lookup(env, name), unknown)
        env[var.name] = None if unknown else value
    return env


def _lookup(env: dict[str, str | None], name: str) -> str | None:
    if name not in env:
        return None
    value = env[name]
    return _UNKNOWABLE if value is None else value


def pod_command(container: Container) -> str | None:
    """``command[0]`` as the kubelet expands it, from the pod spec alone; None if it needs anything else.

    None when the container gives no ``command`` (the image ENTRYPOINT would
    decide), and when a ``$(VAR)`` stays unresolved: a valueFrom variable
    (unknowable) or one the container env does not define (the judgement
    without the image stays silent rather than guess).
    """
    command = _nonempty(container.command)
    if command is None:
        return None
    cenv = container_env(container)
    unknown: list[str] = []
    missing: list[str] = []

    def lookup(name: str) -> str | None:
        value = _lookup(cenv, name)
        if value is None:
            missing.append(name)
        return value

    argv0 = expand(command[0], lookup, unknown)
    return None if unknown or missing else argv0


def _nonempty(value: tuple[str, ...] | None) -> tuple[str, ...] | None:
    return value if value else None


def effective_process(container: Container, config: ImageConfig) -> tuple[Process | None, list[Finding]]:
    """The process the runtime will start, or None with a ``no-command`` finding."""
    command = _nonempty(container.command)
    args = _nonempty(container.args)
    entrypoint = config.entrypoint if config.entrypoint not in (("",),) else None
    entrypoint = _nonempty(entrypoint)
    cmd = _nonempty(config.cmd)

    cenv = container_env(container)
    unknown: list[str] = []

    def exp(values: tuple[str, ...]) -> list[str]:
        return [expand(v, lambda name: _lookup(cenv, name), unknown) for v in values]

    argv: list[str] = []
    origin = ""
    if command is not None:
        argv = exp(command) + (exp(args) if args else [])
        origin = "command"
    else:
        tail = exp(args) if args is not None else list(cmd or ())
        head = list(entrypoint or ())
        argv = head + tail
        origin = "ENTRYPOINT" if head else ("args" if args is not None else "CMD")
    if not argv:
        return None, [finding(
            "no-command",
            "neither the container (command/args) nor the image (ENTRYPOINT/CMD) gives a command: the runtime "
            "fails with CreateContainerError (no command specified)",
            evidence={"entrypoint": list(config.entrypoint or ()), "cmd": list(config.cmd or ())})]

    env: dict[str, str | None] = {"PATH": DEFAULT_PATH}
    for item in config.env:
        name, sep, value = item.partition("=")
        if sep:
            env[name] = value
    env.update(cenv)
    cwd = container.working_dir or config.working_dir or "/"
    if not cwd.startswith("/"):
        cwd = "/" + cwd
    notes: list[Finding] = []
    if unknown and argv and any(f"$({name})" in argv[0] for name in unknown):
        notes.append(finding(
            "not-verified",
            f"the command {argv[0]!r} uses $({unknown[0]}), which comes from valueFrom: its value is only known "
            f"at run time, so the command was not checked",
            evidence={"variables": sorted(set(unknown))}))
    return Process(tuple(argv), env, cwd, origin, tuple(dict.fromkeys(unknown))), notes
