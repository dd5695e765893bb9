"""The body of ``canrun audit`` (the CLI parses flags and calls ``run``).

Kept out of ``cli.py`` so the command's cluster wiring, formats and PolicyReport
upkeep live with the audit code.  Errors are not caught here: a ``ClusterError``
(unreachable, forbidden) or a ``UsageError`` reaches the CLI's one error path
and becomes exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from canrun.audit import policyreport
from canrun.audit.model import AuditRun
from canrun.audit.scan import audit, pull_secrets_of
from canrun.config import Settings, open_engine
from canrun.errors import CanrunError, UsageError

FORMATS = ("markdown", "policyreport", "json", "html")
Progress = Callable[[int, int], None]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster config, else $KUBECONFIG or "
                   "~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context to use")
    p.add_argument("-f", "--filename", action="append", default=[], metavar="DUMP",
                   help="judge a saved dump instead of a cluster (kubectl get deploy,rs,sts,ds,cronjob,job,rc,pods,"
                        "nodes -A -o yaml > DUMP; - for stdin; repeatable); no cluster is contacted")
    p.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                   help="audit only this namespace (repeatable; default: all namespaces)")
    p.add_argument("-l", "--selector", metavar="SELECTOR", help="label selector, as kubectl -l")
    p.add_argument("--format", choices=FORMATS, default="markdown",
                   help="report format (default: markdown); policyreport prints the PolicyReports as YAML")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the report here instead of stdout")
    p.add_argument("--apply", action="store_true",
                   help="create or update the wgpolicyk8s.io PolicyReports (canrun-<namespace>) in the cluster")
    p.add_argument("--use-pull-secrets", action="store_true",
                   help="read each workload's images with its own imagePullSecrets (or its ServiceAccount's), as "
                        "the kubelet does; needs get on secrets and serviceaccounts (off by default: no Secrets "
                        "are read)")
    p.add_argument("--exit-zero", action="store_true",
                   help="exit 0 even with error findings (scheduled audits whose results live in PolicyReports)")


def render(run: AuditRun, fmt: str) -> str:
    if fmt == "json":
        from canrun.audit import document
        return document.render(run)
    if fmt == "html":
        from canrun.audit import html
        return html.render(run)
    if fmt == "policyreport":
        return policyreport.render_yaml(policyreport.build_reports(run))
    from canrun.audit import markdown
    return markdown.render(run)


def _stale_namespaces(cluster: Any, run: AuditRun) -> list[str]:
    """Namespaces holding a canrun PolicyReport from an earlier audit that this one has nothing for.

    Their reports are emptied rather than left claiming failures that were fixed.  Only for a full
    audit (no label selector): a selected audit says nothing about the workloads it did not select.
    """
    if run.label_selector:
        return []
    selector = ",".join(f"{k}={v}" for k, v in policyreport.MANAGED_BY.items())
    scopes = run.namespaces or [None]
    found: list[str] = []
    for ns in scopes:
        try:
            existing = cluster.list_objects(policyreport.API_VERSION, "PolicyReport", ns, selector)
        except CanrunError:
            return []  # no PolicyReport CRD or no list permission: nothing to prune, apply will say more
        found += [str((o.get("metadata") or {}).get("namespace")) for o in existing
                  if (o.get("metadata") or {}).get("namespace")]
    return sorted(set(found))


async def run(args: argparse.Namespace, settings: Settings, *, stdout: TextIO, stderr: TextIO,
              progress: Progress | None = None, stdin: TextIO | None = None) -> int:
    if args.output is not None and args.output.parent and not args.output.parent.is_dir():
        raise UsageError(f"--output {args.output}: directory {args.output.parent} does not exist")
    dumps = list(getattr(args, "filename", []) or [])
    cluster: Any = None
    if dumps:
        for flag, given in (("--apply", args.apply), ("-l/--selector", args.selector),
                            ("--kubeconfig", args.kubeconfig), ("--context", args.context)):
            if given:
                raise UsageError(f"{flag} needs a cluster; -f audits a dump offline (select when dumping: "
                                 "kubectl get … -l SELECTOR)")
        if args.use_pull_secrets:
            raise UsageError("--use-pull-secrets reads Secrets from a cluster; with -f the dump is judged with "
                             "your own registry credentials (--docker-config)")
        for dump in dumps:
            if dump != "-" and not Path(dump).exists():
                raise UsageError(f"-f {dump}: no such file or directory")
        from canrun.audit.dump import audit_dump

        async with open_engine(settings) as engine:
            result = await audit_dump(dumps, engine.validator, stdin=stdin or sys.stdin, namespaces=args.namespace or None,
                                      platforms=settings.nodes.platforms if settings.was_given("nodes.platforms") else None,
                                      progress=progress)
    else:
        from canrun.kube.client import Cluster, load_api_client

        api_client = await asyncio.to_thread(load_api_client, args.kubeconfig, args.context)
        cluster = Cluster(api_client)
        problems: list[str] = []
        keychain_for = pull_secrets_of(cluster, problems) if args.use_pull_secrets else None
        async with open_engine(settings) as engine:
            result = await audit(cluster, engine.validator, namespaces=args.namespace or None,
                                 label_selector=args.selector,
                                 platforms=settings.nodes.platforms if settings.was_given("nodes.platforms") else None, progress=progress,
                                 keychain_for=keychain_for)
        for problem in problems:
            stderr.write(f"canrun: {problem}\n")
    text = render(result, args.format)
    if args.output is not None:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--output {args.output}: {exc.strerror or exc}") from exc
    else:
        stdout.write(text)
    if args.apply:
        stale = await asyncio.to_thread(_stale_namespaces, cluster, result)
        reports = policyreport.build_reports(result, namespaces=stale)
        written = await asyncio.to_thread(policyreport.apply_reports, cluster, reports)
        stderr.write(f"canrun: applied {written} PolicyReport(s)\n")
    for error in result.inventory.errors:
        stderr.write(f"canrun: skipped an unreadable object: {error}\n")
    for kind in result.inventory.unserved:
        stderr.write(f"canrun: the API server does not serve {kind}: none audited\n")
    if dumps and not result.inventory.items and result.inventory.errors:
        return 2  # nothing of the dump could be judged
    if result.has_errors and not args.exit_zero:
        return 1
    return 0
