"""A real ``redis-server`` (Debian's package) on a free loopback port, with no persistence, for tests.

``start_redis`` waits until it answers PING; ``stop`` ends it (and ``start`` brings it back on the
same port, for "Redis went away mid-run" tests).  ``password`` turns on ``requirepass``.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support import tools
from tests.support.registry import free_port


@dataclass
class RunningRedis:
    binary: Path
    port: int
    workdir: Path
    password: str | None = None
    #: (certificate, key) to serve TLS only (``rediss://``).
    tls: tuple[Path, Path] | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self) -> RunningRedis:
        args = [str(self.binary), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "yes"]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            cert, key = self.tls
            args[args.index("--port") + 1] = "0"
            args += ["--tls-port", str(self.port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                     "--tls-auth-clients", "no"]
        log = open(self.workdir / "redis.log", "ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.workdir / 'redis.log').read_text()[-2000:]}")
            if self._answers() if self.tls is None else self._listening():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer within 10 s")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.process = None


def start_redis(workdir: Path, *, password: str | None = None, tls: tuple[Path, Path] | None = None) -> RunningRedis:
    binary = tools.find("redis-server").require()
    workdir.mkdir(parents=True, exist_ok=True)
    return RunningRedis(binary, free_port(), workdir, password, tls).start()
