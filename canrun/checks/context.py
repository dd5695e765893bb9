"""What one container's checks are judged against: the inputs, as one plain record.

The validator builds an ``ExecContext`` per container and node platform.
What several checks share and that is derived from it (the process, the
identity, the volume mounts) is computed once by ``check_container`` and
handed to the checks as plain values, so this record depends on none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from canrun.image.walk import RootView
from canrun.image.model import ImageConfig
from canrun.platform import Platform
from canrun.spec import Container, PodSpec


@dataclass(frozen=True)
class ExecContext:
    container: Container
    pod: PodSpec
    config: ImageConfig
    fs: RootView
    node: Platform
    image_platform: Platform
    #: containerd (default), cri-o or docker (cri-dockerd): decides what non-root users keep.
    runtime: str = "containerd"

    def layer_label(self, layer: int) -> str:
        """``layer 3 of 5`` (1-based, as people count them)."""
        return f"layer {layer + 1} of {len(self.fs.layer_digests)}"
