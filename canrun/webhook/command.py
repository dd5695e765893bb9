"""The ``canrun serve`` flags, kept light: the server stack is imported only when serving."""

from __future__ import annotations

import argparse
from pathlib import Path

from canrun.config import Settings


# -- the command line (``canrun serve``) ------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``canrun serve`` (the engine's common flags are added by the CLI)."""
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=8443, help="HTTPS port (default 8443)")
    p.add_argument("--tls-cert", type=Path, metavar="FILE", help="serving certificate (PEM); reloaded when it "
                   "changes. Without --tls-cert/--tls-key a self-signed one is generated")
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="the certificate's private key (PEM)")
    p.add_argument("--cert-dir", type=Path, metavar="DIR", help="where to write the generated self-signed "
                   "certificate (default: a temporary directory)")
    p.add_argument("--self-managed-certs", action="store_true",
                   help="keep a CA and serving certificate in a Secret, rotate them, patch the caBundle")
    p.add_argument("--cert-namespace", metavar="NS", help="with --self-managed-certs: namespace of the Service "
                   "and Secret (default: the pod's namespace)")
    p.add_argument("--cert-service", default="canrun", metavar="NAME",
                   help="with --self-managed-certs: the webhook Service the certificate names (default canrun)")
    p.add_argument("--cert-secret", default="canrun-tls", metavar="NAME",
                   help="with --self-managed-certs: the Secret holding CA and certificate (default canrun-tls)")
    p.add_argument("--webhook-config", default="canrun", metavar="NAME",
                   help="with --self-managed-certs: the ValidatingWebhookConfiguration whose caBundle is patched")
    p.add_argument("--no-discover-service-ranges", dest="discover_service_ranges", action="store_false",
                   help="do not add the cluster's ServiceCIDR ranges to the blocked networks")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster config, then $KUBECONFIG)")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--config-reload-interval", type=float, default=10.0, metavar="S",
                   help="check the --config file for changes every S seconds and apply them (default 10)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")


async def run_from_args(args: argparse.Namespace, settings: Settings) -> int:
    from canrun.webhook import logs
    from canrun.settings import settings_for
    from canrun.webhook.main import ServeOptions, run

    logs.configure(args.log_level)
    options = ServeOptions(host=args.host, port=args.port, tls_cert=args.tls_cert, tls_key=args.tls_key,
                           cert_dir=args.cert_dir, self_managed_certs=args.self_managed_certs,
                           platforms_given=settings.was_given("nodes.platforms"), kubeconfig=args.kubeconfig, context=args.context,
                           log_level=args.log_level, discover_service_ranges=args.discover_service_ranges,
                           cert_manager={"namespace": args.cert_namespace, "service": args.cert_service,
                                         "secret_name": args.cert_secret, "webhook_config": args.webhook_config,
                                         **({"cert_dir": args.cert_dir} if args.cert_dir else {})},
                           recompose=lambda: settings_for("serve", args),
                           config_reload_interval=args.config_reload_interval)
    await run(settings, options)
    return 0
