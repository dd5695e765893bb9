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
import logging
import sys
import traceback
from collections.abc import Coroutine, Sequence
from typing import Any, TextIO

from canrun.config import add_flags, open_engine
from canrun.settings import settings_for
from canrun.errors import INTERNAL_LOG, CanrunError, UsageError
from canrun.output.progress import ProgressBar
from canrun.version import version_string

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors share the one error path."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # the edge prints "canrun: ..."; name the subcommand, not the program a second time
        command = self.prog.partition(" ")[2]
        raise UsageError(f"{command + ': ' if command else ''}{message} (see --help)")


COMMANDS = ("check", "inspect", "audit", "serve", "certs", "completion", "explain")


class _VersionAction(argparse.Action):
    """``--version``: the commit is looked up (two git calls) only when it is asked for, not on every command."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str = "show canrun's version and exit") -> None:
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser._print_message(f"canrun {version_string()}\n", sys.stdout)
        parser.exit()


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, the other subcommands get no options.

    Each subcommand's options live beside its code (``check/``, ``audit/``,
    ``webhook/``, ``certs``), so declaring them imports that code; a warm
    ``canrun check`` must not pay for the webhook, the audit and cryptography.
    The settings' flags come from their declarations in ``config`` (``add_flags``).
    """
    parser = _Parser(prog="canrun", description="Predict ContainerCannotRun before it happens.")
    parser.add_argument("--version", action=_VersionAction)
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
        add_flags(check, "check")

    inspect = sub.add_parser("inspect", help="show an image's platforms, config and how a path would exec")
    if wanted("inspect"):
        inspect.add_argument("image")
        inspect.add_argument("--path", action="append", default=[], help="path or command name to resolve "
                             "(repeatable; default: the image's effective command)")
        inspect.add_argument("--user", help="UID[:GID] to judge permissions for (default: the image USER)")
        inspect.add_argument("--format", choices=("text", "json"), default="text")
        inspect.add_argument("-v", "--verbose", action="store_true", help="show the traceback of an internal error")
        add_flags(inspect, "inspect")

    audit = sub.add_parser("audit", help="judge every workload running in a cluster; PolicyReports, html, markdown")
    if wanted("audit"):
        from canrun.audit import command as audit_command
        audit_command.add_arguments(audit)
        add_flags(audit, "audit")

    serve = sub.add_parser("serve", help="run the validating admission webhook (HTTPS)")
    if wanted("serve"):
        from canrun.webhook import command as serve_command
        serve_command.add_arguments(serve)
        add_flags(serve, "serve")

    certs_parser = sub.add_parser("certs", help="write a CA, a serving certificate, a Secret manifest and "
                                  "the webhook caBundle for manual TLS setup")
    if wanted("certs"):
        from canrun import certs
        certs.add_arguments(certs_parser)

    completion = sub.add_parser("completion", help="print a shell completion script (bash, zsh or fish)")
    if wanted("completion"):
        completion.add_argument("shell", choices=("bash", "zsh", "fish"))

    explain = sub.add_parser("explain", help="print a rule's page: what fails at run time, how canrun sees it, "
                             "how to fix it")
    explain.add_argument("rule", nargs="?", help="the rule id of a finding (without it: the list of rules)")
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names (its first word that is not an option), if it is one of ours."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


async def _check(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from canrun.check import command as check_command

    settings = settings_for("check", args)
    progress = ProgressBar(stderr)
    try:
        return await check_command.run(args, settings, stdout=stdout, stderr=stderr, progress=progress)
    finally:
        progress.close()


async def _audit(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from canrun.audit import command as audit_command

    settings = settings_for("audit", args)
    progress = ProgressBar(stderr)
    try:
        return await audit_command.run(args, settings, stdout=stdout, stderr=stderr, progress=progress)
    finally:
        progress.close()


async def _serve(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from canrun.webhook import command as serve_command

    return await serve_command.run_from_args(args, settings_for("serve", args))


async def _certs(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from canrun import certs

    return certs.run_command(args, stdout)


async def _inspect(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from canrun.inspect import inspect_image, render_json, render_text

    settings = settings_for("inspect", args)
    async with open_engine(settings) as engine:
        results = [await inspect_image(engine, args.image, platform, paths=args.path, user=args.user)
                   for platform in settings.nodes.platforms]
    if args.format == "json":
        stdout.write(render_json(results[0]) if len(results) == 1 else render_json(results))
    else:
        stdout.write("\n".join(render_text(r) for r in results))
    return EXIT_FINDINGS if any(r.fails for r in results) else EXIT_OK


async def _completion(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from canrun.completion import script

    stdout.write(script(args.shell, build_parser()))
    return EXIT_OK


async def _explain(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from canrun.findings import RULES

    if not args.rule:
        width = max(len(r) for r in RULES)
        stdout.write("".join(f"{r.id:<{width}}  {r.severity.value:<7}  {r.title}\n" for r in RULES.values()))
        return EXIT_OK
    rule = RULES.get(args.rule)
    if rule is None:
        raise UsageError(f"no rule {args.rule!r}; the rules are: {', '.join(RULES)}")
    stdout.write(rule.page)
    return EXIT_OK


def _one_shot_tuning() -> None:
    """Tune the interpreter for a one-shot command that reads images as fast as the cores allow.

    * A check builds a few hundred thousand acyclic objects (layer entries, merged
      filesystem nodes) that generational collections would traverse again and
      again: freeze what the imports made and collect the young generation rarely.
    * Layer workers release the GIL to inflate (ISA-L) and need it back briefly to
      parse each piece; with the default 5 ms switch interval they wait behind the
      event loop's Python; a shorter interval hands it over sooner.
    The long-running webhook keeps the defaults (bench/README.md has the effect of each).
    """
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    sys.setswitchinterval(0.0005)


def _run_fast(main_coroutine: Coroutine[Any, Any, int]) -> int:
    """Run a one-shot command on uvloop when it is installed (it comes with uvicorn[standard]).

    A cold check streams hundreds of MB through the event loop, and uvloop's I/O
    path is the cheaper one (bench/README.md).
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        return asyncio.run(main_coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main_coroutine)


def _verbose(argv: Sequence[str]) -> bool:
    """Whether the user asked for detail: ``-v`` or ``--log-level debug`` anywhere on the line."""
    words = list(argv)
    return any(w in ("-v", "--verbose", "--log-level=debug") for w in words) or any(
        a == "--log-level" and b == "debug" for a, b in zip(words, words[1:]))


def _message(exc: CanrunError) -> str:
    text = str(exc)
    return text[len("canrun: "):] if text.startswith("canrun: ") else text


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run one command.  The edge: a ``CanrunError`` is one line and exit 2, so is a bug of ours.

    An exception that is not a ``CanrunError`` is a bug in canrun, not a user
    mistake: it is reported as one ``internal error`` line (exit 2) and its
    traceback is printed only with ``-v`` (or ``--log-level debug``).
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    one_shot_process = argv is None  # the command line itself, not a caller embedding canrun
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = _verbose(argv)
    handler = _internal_log(stderr) if verbose else None
    try:
        if not argv:
            build_parser().print_help(stdout)
            return EXIT_OK
        args = build_parser(_command_in(argv)).parse_args(argv)
        if one_shot_process and args.command != "serve":
            _one_shot_tuning()
        handler = {"check": _check, "inspect": _inspect, "audit": _audit, "serve": _serve,
                   "certs": _certs, "completion": _completion, "explain": _explain}[args.command]
        if one_shot_process and args.command != "serve":
            return _run_fast(handler(args, stdout, stderr))
        return asyncio.run(handler(args, stdout, stderr))
    except CanrunError as exc:
        stderr.write(f"canrun: {_message(exc)}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        stderr.write("canrun: interrupted\n")
        return 130
    except Exception as exc:  # a bug of ours: one line, the traceback only on request
        stderr.write(f"canrun: internal error: {type(exc).__name__}: {exc} (a bug in canrun; "
                     f"{'the traceback follows' if verbose else 'rerun with -v for the traceback'})\n")
        if verbose:
            traceback.print_exception(exc, file=stderr)
        return EXIT_USAGE
    finally:
        if handler is not None:
            logging.getLogger(INTERNAL_LOG).removeHandler(handler)


def _internal_log(stream: TextIO) -> logging.Handler:
    """With ``-v``, the tracebacks of internal errors the engine survived (``INTERNAL_LOG``) go to stderr."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("canrun: %(message)s"))
    logger = logging.getLogger(INTERNAL_LOG)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return handler


if __name__ == "__main__":
    raise SystemExit(main())
