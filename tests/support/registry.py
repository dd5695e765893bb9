"""A real CNCF distribution registry (Debian's ``docker-registry``) on loopback, for tests.

Each registry gets its own storage directory and a free port, so tests can corrupt
blobs on disk or run several registries (plain, TLS, auth) side by side.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class RunningRegistry:
    host: str  # "127.0.0.1:PORT", as used in image references
    root: Path  # storage root directory
    process: subprocess.Popen[bytes]
    scheme: str = "http"
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def blob_path(self, digest: str) -> Path:
        algo, hexd = digest.split(":", 1)
        return self.root / "docker/registry/v2/blobs" / algo / hexd[:2] / hexd / "data"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_registry(workdir: Path, *, listen: str = "127.0.0.1", extra_config: str = "",
                   scheme: str = "http") -> RunningRegistry:
    """Start ``docker-registry`` with filesystem storage under ``workdir``; wait until it answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port(listen)
    root = workdir / "storage"
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        "storage:\n  filesystem:\n    rootdirectory: " + str(root) + "\n"
        "  delete:\n    enabled: true\n"
        "http:\n  addr: " + f"{listen}:{port}" + "\n" + extra_config
    )
    log = open(workdir / "registry.log", "wb")
    proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OTEL_TRACES_EXPORTER": "none"})
    reg = RunningRegistry(host=f"{listen}:{port}", root=root, process=proc, scheme=scheme)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {(workdir / 'registry.log').read_text()[-2000:]}")
        try:
            httpx.get(f"{reg.url}/v2/", timeout=1, verify=False)
            return reg
        except httpx.HTTPError:
            time.sleep(0.1)
    reg.stop()
    raise RuntimeError("docker-registry did not start within 20 s")
