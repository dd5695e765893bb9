"""``make demo``: a local registry with sample images built from real binaries, and ``canrun check`` on examples/.

Everything happens on this machine: Debian's ``docker-registry`` listens on
127.0.0.1 with its storage in a temporary directory, the images are assembled
with ``umoci`` from real binaries (static busybox for amd64 and arm64, the
host's glibc ``ls``) and pushed with ``skopeo``, then the real CLI checks the
manifests in ``examples/`` for a mixed amd64 + arm64 cluster.  No cluster, no
Docker, nothing from the internet; the registry and the temporary files are
gone when the demo ends.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import images  # noqa: E402
from tests.support.registry import REGISTRY_BIN, RunningRegistry  # noqa: E402

EXAMPLES = ROOT / "examples"
PORT = 5000  # the port examples/ name; another one is used (and the manifests rewritten) if it is taken
PLATFORMS = "linux/amd64,linux/arm64"

#: catalogue image -> the name the examples pull it by
DEMO_IMAGES = {
    "busybox": "shop/storefront:2.1",
    "amd64-only": "shop/checkout:1.4",
    "mode700": "shop/billing:1.2",
    "missing-user": "shop/worker:2.0",
    "crlf": "shop/export:1.0",
    "bash-script": "data/db-migrate:5.1",
    "whiteout": "shop/reports:3.0",
    "dynamic-ls": "tools/lister:1.0",
    "mislabeled": "infra/edge-proxy:0.9",
    "usrmerge": "infra/web:1.25",
}


def say(text: str = "") -> None:
    print(text, flush=True)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_registry(work: Path, port: int) -> RunningRegistry:
    import httpx

    work.mkdir(parents=True, exist_ok=True)
    root = work / "storage"
    config = work / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n")
    log = open(work / "registry.log", "wb")
    proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OTEL_TRACES_EXPORTER": "none"})
    registry = RunningRegistry(host=f"127.0.0.1:{port}", root=root, process=proc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: docker-registry exited: {(work / 'registry.log').read_text()[-1000:]}")
        try:
            httpx.get(f"{registry.url}/v2/", timeout=1)
            return registry
        except httpx.HTTPError:
            time.sleep(0.1)
    registry.stop()
    raise SystemExit("demo: docker-registry did not start within 20 s")


def manifests_for(host: str, work: Path) -> Path:
    """examples/ itself when the registry got port 5000, else a copy naming the registry's real address."""
    if host == f"127.0.0.1:{PORT}":
        return EXAMPLES
    copy = work / "examples"
    copy.mkdir()
    for src in sorted(EXAMPLES.glob("*.yaml")):
        (copy / src.name).write_text(src.read_text().replace(f"127.0.0.1:{PORT}/", f"{host}/"))
    return copy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true",
                        help="leave the registry running afterwards, to try canrun inspect and canrun serve on it")
    keep = parser.parse_args(argv).keep
    for tool in ("umoci", "skopeo", REGISTRY_BIN):
        if shutil.which(tool) is None:
            raise SystemExit(f"demo: {tool} is missing; run `make setup` (scripts/setup.sh) first")
    work = Path(tempfile.mkdtemp(prefix="canrun-demo-"))
    port = PORT if port_free(PORT) else images_free_port()
    registry: RunningRegistry | None = None
    try:
        registry = start_registry(work / "registry", port)
        say(f"demo: registry at {registry.host} (storage in {work})")
        started = time.monotonic()
        try:
            arm64 = str(images.arm64_busybox())
        except images.BuildError as exc:
            raise SystemExit(f"demo: {exc}") from exc
        recipes = images.catalogue_recipes(arm64)
        docs = {r.name: r.doc for r in recipes}
        images.publish(registry.host, registry.blob_path, recipes=recipes, names=DEMO_IMAGES)
        say(f"demo: built and pushed {len(DEMO_IMAGES)} images in {time.monotonic() - started:.1f} s "
            "(umoci + skopeo, from static busybox amd64/arm64 and the host's /bin/ls)")
        for name, repo in DEMO_IMAGES.items():
            say(f"        {repo:<22} {docs[name]}")
        manifests = manifests_for(registry.host, work)
        shown = manifests.relative_to(ROOT) if manifests == EXAMPLES else manifests
        say()
        say(f"$ canrun check -f {shown}/ --platform {PLATFORMS}")
        env = {**os.environ, "CANRUN_CACHE_DIR": str(work / "cache")}
        code = subprocess.call([sys.executable, "-m", "canrun", "check", "-f", f"{shown}/",
                                "--platform", PLATFORMS], env=env, cwd=ROOT)
        say(f"$ echo $?\n{code}")
        say()
        started = time.monotonic()
        again = subprocess.run([sys.executable, "-m", "canrun", "check", "-f", f"{shown}/", "--platform", PLATFORMS,
                                "--format", "json"], env=env, cwd=ROOT, capture_output=True, text=True)
        elapsed = time.monotonic() - started
        if again.returncode in (0, 1):
            report = json.loads(again.stdout)
            flagged = {(f["resource"]["kind"], f["resource"]["namespace"], f["resource"]["name"])
                       for f in report["findings"] if f["resource"] and f["severity"] != "info"}
            fine = sorted(set(_workloads(manifests)) - flagged)
            if fine:
                say("would start everywhere: " + ", ".join(f"{k} {ns}/{n}" for k, ns, n in fine))
            say(f"the same check again, from the cache (merged views and layer indexes by digest): {elapsed:.1f} s "
                "for the whole process, with --format json")
        say("exit status: 0 nothing would fail, 1 something would fail (above), 2 input canrun could not read.")
        if keep:
            _kept(registry, work)
        return 0 if code in (0, 1) else code
    finally:
        if registry is not None and not keep:
            registry.stop()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _kept(registry: RunningRegistry, work: Path) -> None:
    host = registry.host
    say()
    say(f"demo: the registry keeps running at {host} (pid {registry.process.pid}); try:")
    say(f"  canrun inspect {host}/shop/reports:3.0 --platform {PLATFORMS}")
    say(f"  canrun serve --platform linux/amd64 --allow-registry-host {host}")
    say("    (the webhook's SSRF guard refuses loopback registries unless --allow-registry-host names them)")
    say(f"stop it with: kill {registry.process.pid} && rm -rf {work}")


def _workloads(manifests: Path) -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of every object in the examples, read with PyYAML (not canrun's loader)."""
    import yaml

    out = []
    for path in sorted(manifests.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind"):
                meta = doc.get("metadata") or {}
                out.append((doc["kind"], meta.get("namespace") or "default", meta.get("name", "")))
    return out


def images_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    raise SystemExit(main())
