"""The ``canrun`` command: ``check`` manifests, ``inspect`` an image.

This is an edge of the program: every ``CanrunError`` becomes one line on
stderr and exit status 2; nothing below prints or exits.  Exit status is part of
the contract other tools rely on: 0 no error findings, 1 error findings,
2 bad input or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TextIO

from canrun import __version__
from canrun.config import RUNTIMES, Settings, open_engine
from canrun.errors import CanrunError, UsageError
from canrun.output.progress import ProgressBar
from canrun.platform import DEFAULT_CONTAINERD_VERSION, Platform, parse_platforms

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors share the one error path."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--platform", action="append", metavar="P[,P...]",
                   help="node platforms (os/arch[/variant]); default linux/amd64")
    p.add_argument("--runtime", choices=RUNTIMES, default="containerd",
                   help="container runtime model for capabilities (default: containerd)")
    p.add_argument("--containerd-version", metavar="X.Y", default=DEFAULT_CONTAINERD_VERSION,
                   help="containerd the nodes run: 2.1+ pulls only the node's exact platform from an index, "
                        "2.0 and earlier (or use_local_image_pull) fall back to 386 / 32-bit arm "
                        f"(default: {DEFAULT_CONTAINERD_VERSION})")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST",
                   help="talk plain HTTP to this registry host[:port] (repeatable)")
    p.add_argument("--ca-file", type=Path, help="extra CA bundle for registry TLS")
    p.add_argument("--docker-config", type=Path, help="docker config.json with registry credentials")
    p.add_argument("--cache-dir", type=Path, help="cache directory (default ~/.cache/canrun or $CANRUN_CACHE_DIR)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the on-disk cache")
    p.add_argument("--timeout", type=float, default=30.0, help="registry timeout in seconds (default 30)")


COMMANDS = ("check", "inspect", "audit", "serve", "certs")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, the other subcommands get no options.

    Each subcommand's options live beside its code (``check/``, ``audit/``,
    ``webhook/``, ``certs``), so declaring them imports that code; a warm
    ``canrun check`` must not pay for the webhook, the audit and cryptography.
    """
    parser = _Parser(prog="canrun", description="Predict ContainerCannotRun before it happens.")
    parser.add_argument("--version", action="version", version=f"canrun {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def wanted(name: str) -> bool:
        return only is None or only == name

    check = sub.add_parser("check", help="check Kubernetes manifests against their images")
    if wanted("check"):
        check.add_argument("-f", "--filename", action="append", default=[], metavar="PATH",
                           help="manifest file or directory (recursive); - reads stdin (repeatable)")
        check.add_argument("paths", nargs="*", metavar="PATH", help="more manifests, as with -f (for pre-commit)")
        from canrun.check import command as check_command
        check_command.add_arguments(check)
        _common(check)
        # None = "not given", so a .canrun.yaml value can fill in (flags > file > defaults)
        check.set_defaults(runtime=None, timeout=None, containerd_version=None)

    inspect = sub.add_parser("inspect", help="show an image's platforms, config and how a path would exec")
    if wanted("inspect"):
        inspect.add_argument("image")
        inspect.add_argument("--path", action="append", default=[], help="path or command name to resolve "
                             "(repeatable; default: the image's effective command)")
        inspect.add_argument("--user", help="UID[:GID] to judge permissions for (default: the image USER)")
        inspect.add_argument("--format", choices=("text", "json"), default="text")
        _common(inspect)

    audit = sub.add_parser("audit", help="judge every workload running in a cluster; PolicyReports, html, markdown")
    if wanted("audit"):
        from canrun.audit import command as audit_command
        audit_command.add_arguments(audit)
        _common(audit)

    serve = sub.add_parser("serve", help="run the validating admission webhook (HTTPS)")
    if wanted("serve"):
        from canrun.webhook import command as serve_command
        serve_command.add_arguments(serve)
        _common(serve)

    certs_parser = sub.add_parser("certs", help="write a CA, a serving certificate, a Secret manifest and "
                                  "the webhook caBundle for manual TLS setup")
    if wanted("certs"):
        from canrun import certs
        certs.add_arguments(certs_parser)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names (its first word that is not an option), if it is one of ours."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def _settings(args: argparse.Namespace) -> tuple[Settings, bool]:
    defaulted = not args.platform
    platforms = tuple(parse_platforms(args.platform)) if args.platform else (Platform("linux", "amd64"),)
    settings = Settings(
        platforms=platforms, runtime=args.runtime, containerd_version=args.containerd_version,
        strict=getattr(args, "strict", False),
        insecure_registries=tuple(args.insecure_registry), ca_file=args.ca_file,
        docker_config=args.docker_config, cache_dir=args.cache_dir, use_cache=not args.no_cache,
        timeout=args.timeout)
    return settings, defaulted


async def _check(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from canrun.check import command as check_command

    progress = ProgressBar(stderr)
    try:
        return await check_command.run(args, stdout=stdout, stderr=stderr, progress=progress)
    finally:
        progress.close()


async def _audit(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from canrun.audit import command as audit_command

    settings, defaulted = _settings(args)
    progress = ProgressBar(stderr)
    try:
        return await audit_command.run(args, settings, stdout=stdout, stderr=stderr, progress=progress,
                                       platforms_given=not defaulted)
    finally:
        progress.close()


async def _serve(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from canrun.webhook import command as serve_command

    settings, defaulted = _settings(args)
    return await serve_command.run_from_args(args, settings, platforms_given=not defaulted)


async def _certs(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from canrun import certs

    return certs.run_command(args, stdout)


async def _inspect(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from canrun.inspect import inspect_image, render_json, render_text

    settings, _ = _settings(args)
    async with open_engine(settings) as engine:
        result = await inspect_image(engine, args.image, settings.platforms[0], paths=args.path, user=args.user)
    stdout.write(render_json(result) if args.format == "json" else render_text(result))
    return EXIT_OK


def _one_shot_tuning() -> None:
    """Tune the interpreter for a one-shot command that reads images as fast as the cores allow.

    * A check builds a few hundred thousand acyclic objects (layer entries, merged
      filesystem nodes) that generational collections would traverse again and
      again: freeze what the imports made and collect the young generation rarely.
    * Layer workers release the GIL to inflate (ISA-L) and need it back briefly to
      parse each piece; with the default 5 ms switch interval they wait behind the
      event loop's Python.  0.5 ms hands it over sooner.
    Measured on the 68k-file benchmark image, each about 3% of a cold check.  The
    long-running webhook keeps the defaults.
    """
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    sys.setswitchinterval(0.0005)


def _run_fast(main_coroutine: Coroutine[Any, Any, int]) -> int:
    """Run a one-shot command on uvloop when it is installed (it comes with uvicorn[standard]).

    A cold check streams hundreds of MB through the event loop; uvloop's I/O path
    takes about 0.1 s off a cold check of the 68k-file benchmark image.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        return asyncio.run(main_coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main_coroutine)


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    one_shot_process = argv is None  # the command line itself, not a caller embedding canrun
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = build_parser(_command_in(argv)).parse_args(argv)
        if one_shot_process and args.command != "serve":
            _one_shot_tuning()
        handler = {"check": _check, "inspect": _inspect, "audit": _audit, "serve": _serve,
                   "certs": _certs}[args.command]
        if one_shot_process and args.command != "serve":
            return _run_fast(handler(args, stdout, stderr))
        return asyncio.run(handler(args, stdout, stderr))
    except CanrunError as exc:
        stderr.write(f"canrun: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        stderr.write("canrun: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
