"""``canrun inspect IMAGE``: how an image's command (or any path) resolves and whether it would exec.

It shows what the checks see, step by step: the platform manifest chosen for
the node, the config, the identity the process would have, and for each path
every symlink hop, the final file (type, mode, owner, the layer that wrote it,
its ELF identity or ``#!`` line), the interpreter or loader it needs, and the
verdict with the findings ``canrun check`` would report.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field, replace
from typing import Any

from canrun.checks.context import ExecContext
from canrun.checks.exec import MAX_INTERP_DEPTH, judge_command
from canrun.checks.process import Process, effective_process
from canrun.checks.users import Identity, resolve_identity
from canrun.checks.volumes import pod_mounts
from canrun.errors import UsageError
from canrun.findings import Finding, Severity
from canrun.terminal import printable
from canrun.image.fs import OK, MergedFS, Node, Resolution, permission
from canrun.image.model import ElfInfo, EntryType, ScriptInfo, UnknownFormat
from canrun.platform import Platform, elf_machine_name
from canrun.registry.reference import Reference
from canrun.spec import Container, PodSpec, SecurityContext


@dataclass
class Step:
    """One resolution in an exec chain: the command, then its #! interpreter(s) or ELF loader."""

    role: str  # command | interpreter | loader
    path: str
    outcome: str
    resolved: str
    hops: list[dict[str, str]]
    node: dict[str, Any] | None = None
    #: For a bare command name: the PATH candidates tried, in order, and why each was passed over.
    candidates: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "path": self.path, "outcome": self.outcome,
                                "resolved": self.resolved, "hops": self.hops, "node": self.node}
        if self.candidates:
            data["candidates"] = self.candidates
        return data


@dataclass
class PathReport:
    path: str
    steps: list[Step]
    findings: list[Finding]

    @property
    def verdict(self) -> str:
        errors = [f for f in self.findings if f.severity is Severity.ERROR]
        if errors:
            return "fails: " + ", ".join(dict.fromkeys(f.rule for f in errors))
        if any(f.rule == "not-verified" for f in self.findings):
            return "not verified"
        if any(f.severity is Severity.WARNING for f in self.findings):
            return "runs, with warnings"
        return "runs"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "verdict": self.verdict, "steps": [s.to_dict() for s in self.steps],
                "findings": [f.to_dict() for f in self.findings]}


@dataclass
class InspectResult:
    reference: str
    platform: str
    available: list[str]
    digest: str | None = None
    index_digest: str | None = None
    image_platform: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    layers: int = 0
    entries: int = 0
    runtime: str = "containerd"
    user: dict[str, Any] | None = None
    process: dict[str, Any] | None = None
    findings: list[Finding] = field(default_factory=list)
    paths: list[PathReport] = field(default_factory=list)
    note: str | None = None
    #: The image has no build for the platform: nodes of it fail with exec format error.
    platform_missing: bool = False

    @property
    def fails(self) -> bool:
        """The verdict ``canrun inspect`` exits 1 for: an error finding, or a traced path that fails."""
        return (self.platform_missing or any(f.severity is Severity.ERROR for f in self.findings)
                or any(p.verdict.startswith("fails") for p in self.paths))

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference, "platform": self.platform, "available": self.available,
            "digest": self.digest, "index_digest": self.index_digest, "image_platform": self.image_platform,
            "config": self.config, "layers": self.layers, "entries": self.entries, "runtime": self.runtime,
            "user": self.user, "process": self.process, "findings": [f.to_dict() for f in self.findings],
            "paths": [p.to_dict() for p in self.paths], "note": self.note,
        }


def parse_user(text: str | None) -> tuple[int | None, int | None]:
    """``UID[:GID]`` from ``--user``; names are refused (the kubelet only takes numbers too)."""
    if text is None or text == "":
        return None, None
    uid_text, _, gid_text = text.partition(":")
    try:
        uid = int(uid_text)
        gid = int(gid_text) if gid_text else None
    except ValueError:
        raise UsageError(f"--user {text!r}: expected UID[:GID] as numbers, e.g. 1000 or 1000:1000") from None
    if uid < 0 or (gid is not None and gid < 0):
        raise UsageError(f"--user {text!r}: uid and gid must not be negative")
    return uid, gid


def describe_exec(node: Node) -> dict[str, Any] | None:
    info = node.exec
    if isinstance(info, ElfInfo):
        return {"format": "elf", "machine": elf_machine_name(info.machine, info.elf_class),
                "class": info.elf_class, "endian": "little" if info.little_endian else "big",
                "interpreter": info.interpreter}
    if isinstance(info, ScriptInfo):
        return {"format": "script", "line": info.line, "interpreter": info.interpreter,
                "argument": info.argument}
    if isinstance(info, UnknownFormat):
        return {"format": "unknown", "magic": info.magic.hex()}
    return None


def describe(node: Node, fs: MergedFS) -> dict[str, Any]:
    data: dict[str, Any] = {"type": node.type.value, "mode": node.mode_octal, "uid": node.uid, "gid": node.gid,
                            "size": node.size}
    if node.layer >= 0:
        data["layer"] = node.layer + 1
        data["layer_digest"] = fs.layer_digests[node.layer]
    if node.hardlink:
        data["hardlink_of"] = node.hardlink
    if node.volume:
        data["volume"] = node.volume
    exec_ = describe_exec(node)
    if exec_:
        data["exec"] = exec_
    return data


def _step(role: str, path: str, res: Resolution, fs: MergedFS) -> Step:
    return Step(role, path, res.outcome, res.real, [{"link": h.link, "target": h.target} for h in res.hops],
                describe(res.node, fs) if res.node is not None else None)


def trace(ctx: ExecContext, path: str, process: Process, identity: Identity) -> list[Step]:
    """The resolutions execve would make for ``path``: the command, its PATH candidates, interpreters, loader."""
    fs = ctx.fs
    mounts = pod_mounts(ctx.pod, ctx.container, fs)

    def resolve(p: str) -> Resolution:
        return fs.resolve(p, process.cwd, creds=identity.creds, mounts=mounts)

    steps: list[Step] = []
    candidates: list[dict[str, str]] = []
    if "/" not in path and path:
        chosen: Resolution | None = None
        path_var = process.path_var or ""
        for directory in [d or "." for d in path_var.split(":")] if path_var else []:
            candidate = posixpath.join(directory, path)
            res = resolve(candidate)
            if res.outcome != OK or res.node is None:
                candidates.append({"path": candidate, "result": res.outcome})
                continue
            if res.node.type is EntryType.DIR:
                candidates.append({"path": candidate, "result": "directory: skipped"})
                continue
            if not permission(res.node, identity.creds)[0]:
                candidates.append({"path": candidate, "result": f"not executable ({res.node.mode_octal}): skipped"})
                continue
            candidates.append({"path": candidate, "result": "found"})
            chosen = res
            break
        if chosen is None:
            return [Step("command", path, "not in PATH", "", [], None, candidates)]
        first = _step("command", chosen.path, chosen, fs)
        first.candidates = candidates
        res = chosen
    else:
        res = resolve(path)
        first = _step("command", path, res, fs)
    steps.append(first)
    for _ in range(MAX_INTERP_DEPTH + 1):
        node = res.node
        if res.outcome != OK or node is None:
            break
        info = node.exec
        if isinstance(info, ScriptInfo):
            res = resolve(info.interpreter)
            steps.append(_step("interpreter", info.interpreter, res, fs))
            continue
        if isinstance(info, ElfInfo) and info.interpreter and info.interpreter != "?":
            res = resolve(info.interpreter)
            steps.append(_step("loader", info.interpreter, res, fs))
        break
    return steps


async def inspect_image(engine: Any, image: str, platform: Platform, *, paths: list[str],
                        user: str | None) -> InspectResult:
    """Resolve ``image`` for a node of ``platform`` and trace ``paths`` (default: the effective command)."""
    run_as_user, run_as_group = parse_user(user)
    ref = Reference.parse(image)
    validator = getattr(engine, "validator", None)
    selection = await engine.store.select(ref, platform, exact=bool(getattr(validator, "exact_pull", False)))
    available = [str(p) for p in selection.resolved.platforms]
    result = InspectResult(reference=str(ref), platform=str(platform), available=available,
                           runtime=engine.settings.nodes.runtime if hasattr(engine, "settings") else "containerd")
    if selection.descriptor is None:
        result.note = (f"the image has no build for {platform} (it has: {', '.join(available) or 'none'}); "
                       f"nodes of that platform fail to pull it (no match for platform in manifest)")
        result.index_digest = selection.resolved.descriptor.digest
        result.platform_missing = True
        return result
    view = await engine.store.view(selection)
    config = view.config
    result.digest, result.index_digest = view.digest, view.index_digest
    result.image_platform = str(config.platform) if config.platform else None
    result.config = {"entrypoint": list(config.entrypoint) if config.entrypoint is not None else None,
                     "cmd": list(config.cmd) if config.cmd is not None else None,
                     "env": list(config.env), "user": config.user, "working_dir": config.working_dir}
    fs = view.fs
    result.layers, result.entries = len(view.layer_digests), len(fs)
    sc = SecurityContext(run_as_user=run_as_user, run_as_group=run_as_group) if run_as_user is not None else None
    container = Container(name="inspect", image=image, security_context=sc)
    ctx = ExecContext(container=container, pod=PodSpec(containers=(container,)), config=config, fs=fs,
                      node=platform, image_platform=config.platform or platform, runtime=result.runtime)
    process, process_notes = effective_process(container, config)
    identity, user_findings = resolve_identity(ctx.pod, container, config.user, fs, result.runtime)
    result.findings = list(process_notes) + list(user_findings)
    if process is not None:
        result.process = {"argv": list(process.argv), "origin": process.origin, "cwd": process.cwd,
                          "path": process.path_var}
    if identity is not None:
        result.user = {**identity.evidence(), "capabilities": sorted(identity.creds.caps)}
    targets = list(paths) or ([process.argv[0]] if process is not None else [])
    if identity is None or not targets:
        if not targets:
            result.note = "no path to trace: the image gives no command; pass --path"
        return result
    if process is None:
        process = Process(argv=(targets[0],), env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                                                           "/sbin:/bin"},
                          cwd=config.working_dir or "/", origin="--path")
    for target in targets:
        judged = replace(process, argv=(target,), origin="--path") if paths else process
        steps = trace(ctx, target, judged, identity)
        findings = judge_command(ctx, target, judged, identity, pod_mounts(ctx.pod, container, fs))
        result.paths.append(PathReport(target, steps, findings))
    return result


# --------------------------------------------------------------------------- rendering
def _node_line(node: dict[str, Any]) -> str:
    parts = [f"{node['type']} {node['mode']} owner {node['uid']}:{node['gid']}", f"{node['size']} bytes"]
    if "layer" in node:
        parts.append(f"layer {node['layer']}")
    if "hardlink_of" in node:
        parts.append(f"hardlink of {node['hardlink_of']}")
    if "volume" in node:
        parts.append(f"from volume {node['volume']}")
    exec_ = node.get("exec")
    if exec_:
        if exec_["format"] == "elf":
            endian = "LSB" if exec_["endian"] == "little" else "MSB"
            loader = f", loader {exec_['interpreter']}" if exec_["interpreter"] else ", static"
            parts.append(f"ELF {exec_['class']}-bit {endian} {exec_['machine']}{loader}")
        elif exec_["format"] == "script":
            parts.append(f"script {exec_['line']!r}")
        else:
            parts.append(f"not ELF nor #! (starts {exec_['magic'] or 'empty'})")
    return ", ".join(parts)


def _show(path: str) -> str:
    """A path as typed, or quoted with escapes when it hides a control character (``/bin/sh\\r``)."""
    return path if path.isprintable() else repr(path)


def render_text(result: InspectResult) -> str:
    """The runbook's answer for a terminal; every line goes through ``terminal.printable`` (the image wrote it)."""
    return "\n".join(printable(line) for line in _text_lines(result).split("\n"))


def _text_lines(result: InspectResult) -> str:
    out = [f"image     {result.reference}"]
    if result.digest:
        index = f" (index {result.index_digest})" if result.index_digest else " (single manifest)"
        out.append(f"digest    {result.digest}{index}")
    label = f" (image config: {result.image_platform})" if result.image_platform else ""
    out.append(f"platform  {result.platform}{label}; available: {', '.join(result.available) or 'single manifest'}")
    if result.digest:
        out.append(f"layers    {result.layers}, {result.entries} paths in the merged filesystem")
        cfg = result.config
        out.append(f"config    ENTRYPOINT {json.dumps(cfg.get('entrypoint'))} CMD {json.dumps(cfg.get('cmd'))} "
                   f"USER {cfg.get('user') or '(none)'} WORKDIR {cfg.get('working_dir') or '(none)'}")
    if result.user:
        u = result.user
        name = f" ({u['username']})" if u.get("username") else ""
        caps = "CAP_DAC_OVERRIDE" if "DAC_OVERRIDE" in u["capabilities"] else "no CAP_DAC_OVERRIDE"
        out.append(f"user      uid {u['uid']}{name} gid {u['gid']} groups {','.join(map(str, u['groups']))} "
                   f"- {u['source']}; {result.runtime}: {caps}")
    if result.process:
        p = result.process
        out.append(f"process   {json.dumps(p['argv'])} (from {p['origin']}), cwd {p['cwd']}, PATH={p['path']}")
    for f in result.findings:
        out.append(f"{f.severity.value:<9} {f.rule}: {f.message}")
    if result.note:
        out.append(f"note      {result.note}")
    for report in result.paths:
        out.append("")
        out.append(f"{report.path}")
        for step in report.steps:
            prefix = "  " if step.role == "command" else f"  {step.role}: "
            for cand in step.candidates:
                out.append(f"  PATH {cand['path']}: {cand['result']}")
            if step.role != "command":
                out.append(f"{prefix}{_show(step.path)}")
            for hop in step.hops:
                out.append(f"    {hop['link']} -> {hop['target']}")
            if step.node is not None:
                out.append(f"    {_show(step.resolved)}: {_node_line(step.node)}")
            elif step.outcome != OK:
                where = f" at {_show(step.resolved)}" if step.resolved else ""
                out.append(f"    {step.outcome}{where}")
        out.append(f"  verdict: {report.verdict}")
        for f in report.findings:
            out.append(f"    {f.severity.value} {f.rule}: {f.message}")
            out.append(f"      fix: {f.hint}")
    return "\n".join(out) + "\n"


def render_json(result: InspectResult | list[InspectResult]) -> str:
    """One platform: its object; several (``--platform a,b``): a list of them, in the order given."""
    data = [r.to_dict() for r in result] if isinstance(result, list) else result.to_dict()
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


__all__ = ["InspectResult", "PathReport", "Step", "inspect_image", "parse_user", "render_json", "render_text",
           "trace"]
