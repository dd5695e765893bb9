"""The body of ``canrun check``: inputs, engine, report (the CLI composes the settings).

Kept out of ``cli.py`` (which parses flags and owns the one error path) so the
check command's wiring lives with its formats.  Nothing here catches
``CanrunError``: a bad config file, an unreachable cluster or an unwritable
``--output`` reaches the CLI and becomes one line and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from canrun.config import Settings, open_engine
from canrun.errors import UsageError
from canrun.exemptions import expired
from canrun.findings import Finding
from canrun.kube.pinning import plan_pin
from canrun.kube.scheduling import NodeInfo, NodePool, platforms_for
from canrun.output import FORMATS, PATCH_FORMATS, CheckRun, Pin, targets_for
from canrun.platform import Platform
from canrun.spec import Workload
from canrun.validator import Report

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
Progress = Callable[[int, int], None]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The check-only flags (the engine flags shared with audit/serve come from the CLI)."""
    p.add_argument("--format", choices=FORMATS, default="text",
                   help="report format (default: text): json, sarif (code scanning), github (workflow "
                        "annotations), junit (test reports), markdown (PR comment); patch / jsonpatch: the node "
                        "affinity pin mode would add, as a strategic-merge or JSON patch per workload")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the report to FILE; the terminal still gets the text report")
    p.add_argument("--kubeconfig", help="read node platforms and labels from this cluster (--platform wins)")
    p.add_argument("--context", help="kubeconfig context for --kubeconfig (implies the default kubeconfig)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show notes (info findings) and the files skipped as not Kubernetes objects")


async def cluster_pool(kubeconfig: str | None, context: str | None) -> tuple[NodePool, list[Platform], str]:
    """The cluster's nodes as a NodePool, their distinct platforms, and a phrase saying where they came from."""
    from canrun.kube.client import Cluster, load_api_client

    def read() -> tuple[list[NodeInfo], str]:
        cluster = Cluster(load_api_client(kubeconfig, context))
        try:
            return cluster.list_nodes(), cluster.host
        finally:
            cluster.close()

    nodes, host = await asyncio.to_thread(read)
    if not nodes:
        raise UsageError(f"the cluster at {host} lists no nodes with a known platform: pass --platform")
    pool = NodePool.from_nodes(nodes)
    where = f"context {context}" if context else f"the cluster at {host}"
    return pool, pool.platforms, f"{len(nodes)} node{'s' if len(nodes) != 1 else ''} of {where}"


def source_root(cwd: Path) -> Path:
    """The repository root (nearest directory with ``.git``), which SARIF and annotations are relative to."""
    for directory in (cwd, *cwd.parents):
        if (directory / ".git").exists():
            return directory
    return cwd


def pins_for(workloads: list[Workload], objects: list[Mapping[str, Any]], report: Report,
             pool: NodePool) -> list[Pin]:
    """Pin mode's plan for each workload, from the findings the report holds for it (exemptions applied)."""
    by_workload: dict[tuple[object, ...], list[Finding]] = {}
    for f in report.findings:
        by_workload.setdefault((f.resource, f.source.file if f.source else None), []).append(f)
    return [Pin(w, obj, plan_pin(w, by_workload.get((w.resource, w.source.file), []), pool))
            for w, obj in zip(workloads, objects)]


def render(run: CheckRun, fmt: str, *, verbose: bool, colour: bool, cwd: Path) -> str:
    if fmt == "json":
        from canrun.output import json as fmt_json
        return fmt_json.render(run)
    if fmt == "sarif":
        from canrun.output import sarif
        return sarif.render(run, root=source_root(cwd), cwd=cwd)
    if fmt == "github":
        from canrun.output import github
        return github.render(run, root=source_root(cwd), cwd=cwd, verbose=verbose)
    if fmt == "junit":
        from canrun.output import junit
        return junit.render(run)
    if fmt == "markdown":
        from canrun.output import markdown
        return markdown.render(run, verbose=verbose)
    if fmt in PATCH_FORMATS:
        from canrun.output import patch
        return patch.render(run, json_ops=fmt == "jsonpatch")
    from canrun.output import text
    return text.render(run, colour=colour, verbose=verbose)


async def run(args: argparse.Namespace, settings: Settings, *, stdout: TextIO, stderr: TextIO, stdin: TextIO | None = None,
              progress: Progress | None = None) -> int:
    from canrun.kube.manifests import load_objects
    from canrun.kube.workloads import workloads_from_load
    from canrun.output import text

    paths = [*args.filename, *getattr(args, "paths", [])]
    if not paths:
        raise UsageError("check: the following arguments are required: -f/--filename PATH "
                         "(a file, a directory, or - for stdin)")
    cwd = Path.cwd()
    for path in paths:
        if path != "-" and not Path(path).exists():
            raise UsageError(f"{path}: no such file or directory")

    platforms_from = None
    platforms = list(settings.nodes.platforms)
    defaulted = not settings.was_given("nodes.platforms")
    if defaulted and (args.kubeconfig or args.context):
        pool, platforms, platforms_from = await cluster_pool(args.kubeconfig, args.context)
        defaulted = False
    else:
        pool = NodePool.from_platforms(platforms)

    for exemption in expired(settings.policy.exceptions):
        stderr.write(f"canrun: {exemption.origin} expired on {exemption.expires}: it exempts nothing\n")
    loaded = load_objects(paths, stdin=stdin or sys.stdin, exclude=list(settings.inputs.exclude))
    workloads = workloads_from_load(loaded)
    async with open_engine(settings) as engine:
        report = await engine.validator.check(workloads.workloads, pool, progress=progress)
    checkrun = CheckRun(
        report=report, platforms=platforms, platforms_defaulted=defaulted,
        input_errors=list(workloads.errors), skipped_kinds=dict(workloads.skipped), files=loaded.files,
        not_objects=list(loaded.not_objects), not_checked=list(loaded.not_checked),
        targets=targets_for(workloads.workloads, lambda w: platforms_for(w.pod, pool).platforms),
        platforms_from=platforms_from,
        pins=pins_for(workloads.workloads, workloads.objects, report, pool) if args.format in PATCH_FORMATS else [])

    colour = text.wants_colour(stdout)
    if args.output and args.output != "-":
        body = render(checkrun, args.format, verbose=args.verbose, colour=False, cwd=cwd)
        _write(Path(args.output), body)
        stdout.write(text.render(checkrun, colour=colour, verbose=args.verbose))
        stderr.write(f"canrun: wrote the {args.format} report to {args.output}\n")
    else:
        stdout.write(render(checkrun, args.format, verbose=args.verbose, colour=colour, cwd=cwd))
    if checkrun.input_errors:
        stderr.write(f"canrun: {len(checkrun.input_errors)} document(s) could not be read; "
                     f"first: {checkrun.input_errors[0]}\n")
        return EXIT_USAGE
    internal = [f for f in report.findings if f.rule == "internal-error"]
    if internal:
        stderr.write(f"canrun: internal error judging {len(internal)} container(s) (a bug in canrun; "
                     f"{'the traceback is above' if args.verbose else 'rerun with -v for the traceback'})\n")
        return EXIT_USAGE
    return EXIT_FINDINGS if report.errors else EXIT_OK


def _write(path: Path, body: str) -> None:
    """Write the report whole or not at all: a CI step must never upload half a SARIF file.

    Special files (``/dev/stdout``, a pipe) cannot be replaced by a rename, so they are written directly.
    """
    if path.exists() and not path.is_file():
        try:
            with path.open("w", encoding="utf-8") as fh:
                fh.write(body)
            return
        except OSError as exc:
            raise UsageError(f"{path}: cannot write the report: {exc.strerror or exc}") from exc
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"{path}: cannot write the report: {exc.strerror or exc}") from exc
