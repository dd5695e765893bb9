"""``canrun serve``: wire the engine, the cluster (if any), the certificates and the server together.

Kept out of ``cli.py`` so the CLI only maps flags to ``ServeOptions``; everything
that decides how the webhook runs (standalone or in a cluster, which
certificates, which node platforms) is here and testable without argv.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canrun.config import Engine, Settings
from canrun.errors import CanrunError, UsageError
from canrun.kube.scheduling import NodePool
from canrun.webhook.app import create_app
from canrun.webhook.metrics import Metrics
from canrun.webhook.server import ReloadingTLS, bind, serve
from canrun.webhook.reload import EngineHolder
from canrun.webhook.service import AdmissionService, PoolSource, watcher_pool

log = logging.getLogger("canrun.webhook")


@dataclass
class ServeOptions:
    host: str = "0.0.0.0"
    port: int = 8443
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Directory for a generated self-signed certificate (default: a temporary directory).
    cert_dir: Path | None = None
    #: Keep a CA and serving certificate in a Secret, rotate them and patch the webhook's caBundle.
    self_managed_certs: bool = False
    #: ``--platform`` given: a static set of node platforms instead of watching Nodes.
    platforms_given: bool = False
    kubeconfig: str | None = None
    context: str | None = None
    #: How often the certificate files are checked for a rotation.
    cert_reload_interval: float = 10.0
    log_level: str = "info"
    #: Add the cluster's ServiceCIDR ranges to the SSRF guard's blocked networks.
    discover_service_ranges: bool = True
    #: Options passed through to ``certs.CertManager`` (namespace, service, secret, webhook config name).
    cert_manager: dict[str, Any] | None = None
    #: Composes the settings again (the settings file changed); None: the settings never change.
    recompose: Callable[[], Settings] | None = None
    #: How often the settings file is checked for a change.
    config_reload_interval: float = 10.0


def _connect(options: ServeOptions) -> Any | None:
    """A ``Cluster`` when one is reachable, else None (standalone); never a traceback."""
    from canrun.kube.client import Cluster, load_api_client

    try:
        cluster = Cluster(load_api_client(options.kubeconfig, options.context))
        cluster.list_objects("v1", "Namespace", label_selector="canrun.io/probe=none")
        return cluster
    except CanrunError as exc:
        if not options.platforms_given and options.kubeconfig:
            raise
        log.warning("no cluster reachable (%s); running standalone", exc)
        return None


def guarded_networks(cluster: Any, given: tuple[str, ...]) -> tuple[str, ...]:
    """``given`` plus the cluster's Service ranges, so a pod cannot point canrun at in-cluster services.

    Discovery failing (an old API server, RBAC without ``servicecidrs``) leaves ``given``
    as it is, with a log line saying so: the guard still refuses loopback, link-local and
    metadata addresses, and ``--blocked-network`` names the range by hand.
    """
    try:
        found = cluster.service_cidrs()
    except CanrunError as exc:
        log.warning("cannot read the cluster's Service ranges (%s); pass --blocked-network CIDR for them", exc)
        return given
    if not found:
        log.info("the cluster serves no ServiceCIDR objects; pass --blocked-network CIDR for its Service range")
        return given
    networks = tuple(dict.fromkeys((*given, *found)))
    log.info("SSRF guard refuses the cluster's Service ranges %s", ", ".join(found))
    return networks


def _self_signed(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    from canrun import certs

    directory.mkdir(parents=True, exist_ok=True)
    return certs.write_self_signed(directory, hosts)


async def run(settings: Settings, options: ServeOptions, *, started: Callable[[str], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT (``settings`` as ``config.settings_for("serve", …)`` composed them)."""
    webhook = settings.webhook
    cluster = await asyncio.to_thread(_connect, options)
    cluster_ranges: tuple[str, ...] = ()
    if cluster is not None and options.discover_service_ranges:
        cluster_ranges = await asyncio.to_thread(guarded_networks, cluster, settings.registry.blocked_networks)
    watcher = None
    pool: PoolSource
    if cluster is not None and not options.platforms_given:
        from canrun.kube.client import NodeWatcher

        watcher = NodeWatcher(cluster).start()
        pool = watcher_pool(watcher)
    else:
        static = [NodePool.from_platforms(list(settings.nodes.platforms))]  # follows the settings file
        pool = lambda: static[0]  # noqa: E731

    extra: list[Callable[[], Awaitable[None]]] = []
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if options.tls_cert and options.tls_key:
        cert, key = options.tls_cert, options.tls_key
    elif options.tls_cert or options.tls_key:
        raise UsageError("--tls-cert and --tls-key go together")
    elif options.self_managed_certs:
        if cluster is None:
            raise UsageError("--self-managed-certs needs a cluster (the certificates live in a Secret)")
        from canrun import certs

        manager = certs.CertManager(cluster, **(options.cert_manager or {}))
        cert, key = await asyncio.to_thread(manager.ensure)
        extra.append(manager.run)
    else:
        if options.cert_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="canrun-serve-")
        directory = options.cert_dir or Path(tmp.name)  # type: ignore[union-attr]
        cert, key = await asyncio.to_thread(_self_signed, directory, ["localhost", "127.0.0.1"])
        log.info("serving a self-signed certificate from %s (pass --tls-cert/--tls-key in a cluster)", directory)

    tls = ReloadingTLS(cert, key, interval=options.cert_reload_interval)
    sock = bind(options.host, options.port)
    try:
        async with EngineHolder(settings, extra_blocked=cluster_ranges, recompose=options.recompose,
                                interval=options.config_reload_interval) as holder:
            engine = holder.engine
            assert engine is not None
            metrics = Metrics()
            metrics.watch_engine(lambda: getattr(holder.current.client, "stats", {}),
                                 lambda: holder.current.store.stats,
                                 lambda: getattr(holder.current.store.cache, "shared", None))
            service = AdmissionService(engine.validator, pool, settings=webhook, cluster=cluster, metrics=metrics)

            def switch(new: Engine) -> None:
                service.use_validator(new.validator)
                if watcher is None:
                    static[0] = NodePool.from_platforms(list(new.settings.nodes.platforms))

            holder.on_change(switch)
            if options.recompose is not None and settings.config_file is not None:
                extra.append(holder.watch)
            app = create_app(service)
            host, port = sock.getsockname()[:2]
            log.info("canrun webhook listening on https://%s:%s (default mode %s, deadline %ss, %s%s)", host, port,
                     webhook.default_mode, webhook.deadline,
                     "node watch" if watcher else "platforms " + ",".join(str(p) for p in settings.nodes.platforms),
                     f", shared cache {settings.cache.shown_url}" if settings.cache.url else "")
            await serve(app, tls, sock=sock, host=options.host, port=options.port, log_level=options.log_level,
                        started=(lambda: started(f"https://{host}:{port}")) if started else None, also=extra)
    finally:
        sock.close()
        if watcher is not None:
            watcher.stop()
        if tmp is not None:
            tmp.cleanup()

