"""The checks: pure functions of an ``ExecContext`` returning findings.

``check_container`` runs them in the order the runtime fails: the process
(no command), the user (kubelet's runAsNonRoot, the runtime's passwd lookup),
then runc's lookup and the kernel's execve.  A container that cannot be
created (no command, unknown user) is not judged further, because nothing
after that point would run.

``check_without_image`` is the fallback when the image cannot be read: only
the verdicts the pod spec decides alone (``checks/imageless.py``).
"""

from __future__ import annotations

from canrun.checks.context import ExecContext
from canrun.checks.exec import check_exec
from canrun.checks.imageless import check_without_image
from canrun.checks.process import effective_process
from canrun.checks.users import resolve_identity
from canrun.checks.volumes import pod_mounts
from canrun.findings import Finding


def check_container(ctx: ExecContext) -> list[Finding]:
    """Every finding for one container on one node platform."""
    process, process_notes = effective_process(ctx.container, ctx.config)
    identity, user_findings = resolve_identity(ctx.pod, ctx.container, ctx.config.user, ctx.fs, ctx.runtime)
    found = list(process_notes) + list(user_findings)
    if process is None or identity is None:
        return found
    return found + check_exec(ctx, process, identity, pod_mounts(ctx.pod, ctx.container, ctx.fs))


__all__ = ["ExecContext", "check_container", "check_without_image"]
