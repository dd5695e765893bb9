"""Everything one container's checks look at, in one record.

The validator builds an ``ExecContext`` per container and node platform; every
check is a pure function of it.  Derived facts (the process, the identity, the
volume mounts) are computed once, lazily, because several checks share them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from canrun.image.fs import MergedFS
from canrun.image.model import ImageConfig
from canrun.platform import Platform
from canrun.spec import Container, PodSpec

if TYPE_CHECKING:
    from canrun.checks.process import Process
    from canrun.checks.users import Identity
    from canrun.checks.volumes import VolumeMounts
    from canrun.findings import Finding

RUNTIMES = ("containerd", "cri-o", "docker")


@dataclass
class ExecContext:
    container: Container
    pod: PodSpec
    config: ImageConfig
    fs: MergedFS
    node: Platform
    image_platform: Platform
    #: containerd (default), cri-o or docker (cri-dockerd): decides what non-root users keep.
    runtime: str = "containerd"

    @cached_property
    def process(self) -> tuple[Process | None, list[Finding]]:
        from canrun.checks.process import effective_process

        return effective_process(self.container, self.config)

    @cached_property
    def identity(self) -> tuple[Identity | None, list[Finding]]:
        from canrun.checks.users import resolve_identity

        return resolve_identity(self)

    @cached_property
    def mounts(self) -> VolumeMounts:
        from canrun.checks.volumes import VolumeMounts

        return VolumeMounts.build(self)

    def layer_label(self, layer: int) -> str:
        """``layer 3 of 5`` (1-based, as people count them)."""
        return f"layer {layer + 1} of {len(self.fs.layer_digests)}"
