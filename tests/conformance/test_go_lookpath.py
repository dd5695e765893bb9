"""Go's own ``exec.LookPath`` tests, as data, run against canrun's lookup of the command (runc's lookup).

runc finds a bare command name with Go's ``exec.LookPath``
(``libcontainer/standard_init_linux.go``: ``name, err := exec.LookPath(l.config.Args[0])``), so Go's
tests of that function pin down what canrun must predict.  The cases below restate, as data, the
Unix cases of:

* golang/go ``src/os/exec/lp_unix_test.go`` at 43e80a0fc88a71f8b190923cad7bce291ad9aef6
  (``TestLookPathUnixEmptyPath``);
* golang/go ``src/os/exec/dot_test.go`` at e61e865ba97a52d24d3aee7642f5804916e94544
  (``TestLookPath``: ``PATH=.`` and ``PATH=../testdir`` with the default ``execerrdot=1``,
  ``PATH=$PWD`` and ``PATH=$OTHER``).

Each Go test creates ``execabs-test`` (mode 0777, three bytes: not a valid binary) in a fresh
``testdir`` it makes the working directory, and prepends one entry to the original PATH.  Here the
"original PATH" is the image default, the test directory is ``/tmp/testdir`` inside an image, and
the lookup is canrun's real one (``checks.exec.Judge.lookup``, through the real merged view).
``execerrdot=0`` (the opt-out GODEBUG) is not a runc setting and is left out.  Go's
``Command().Run()`` half of the test (ENOEXEC after the lookup) is canrun's ``exec-format`` rule,
checked at the end of each found case.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from canrun.checks import check_container
from canrun.checks.context import ExecContext
from canrun.checks.exec import Judge
from canrun.checks.process import effective_process
from canrun.checks.users import resolve_identity
from canrun.checks.volumes import pod_mounts
from canrun.image.fs import MergedFS
from canrun.image.model import EntryType, ImageConfig, LayerIndex, UnknownFormat
from canrun.platform import Platform
from canrun.spec import Container, EnvVar, PodSpec
from tests.checks.build import base_layer, d, f

AMD64 = Platform("linux", "amd64")
ORIG_PATH = "/usr/local/bin:/usr/bin:/bin"
TESTDIR = "/tmp/testdir"
OTHER = "/tmp/other"
EXE = "execabs-test"

FOUND, ERR_DOT, NOT_FOUND = "found", "ErrDot", "ErrNotFound"


@dataclass(frozen=True)
class GoCase:
    source: str  # the Go test (and subtest) this restates
    path: str  # PATH, with $ORIG for the original PATH
    name: str  # the argument to LookPath
    outcome: str  # FOUND, ERR_DOT or NOT_FOUND
    found: str | None = None  # for FOUND: the path LookPath returns (prefix)


CASES = [
    GoCase("lp_unix_test.go TestLookPathUnixEmptyPath", "", "exec_me", NOT_FOUND),
    GoCase("dot_test.go TestLookPath/GODEBUG=execerrdot=1/PATH=.", ".:$ORIG", "./" + EXE, FOUND, "./" + EXE),
    GoCase("dot_test.go TestLookPath/GODEBUG=execerrdot=1/PATH=.", ".:$ORIG", EXE, ERR_DOT),
    GoCase("dot_test.go TestLookPath/GODEBUG=execerrdot=1/PATH=../testdir", "../testdir:$ORIG",
           "../testdir/" + EXE, FOUND, "../testdir/" + EXE),
    GoCase("dot_test.go TestLookPath/GODEBUG=execerrdot=1/PATH=../testdir", "../testdir:$ORIG", EXE, ERR_DOT),
    GoCase("dot_test.go TestLookPath/PATH=$PWD", f"{TESTDIR}:$ORIG", f"{TESTDIR}/{EXE}", FOUND, f"{TESTDIR}/{EXE}"),
    GoCase("dot_test.go TestLookPath/PATH=$PWD", f"{TESTDIR}:$ORIG", EXE, FOUND, f"{TESTDIR}/{EXE}"),
    # PATH=$OTHER: on Unix PATH='' does not imply '.', so the lookup is not ErrDot but not found ...
    GoCase("dot_test.go TestLookPath/PATH=$OTHER (control)", "", EXE, NOT_FOUND),
    # ... and with an independent executable of the same name elsewhere, that one is found
    GoCase("dot_test.go TestLookPath/PATH=$OTHER", f"{OTHER}:$ORIG", EXE, FOUND, f"{OTHER}/{EXE}"),
]


def _image() -> MergedFS:
    garbage = UnknownFormat(bytes([1, 2, 3]))
    layer = LayerIndex("sha256:" + "1" * 64, [
        d("/tmp", 0o1777), d(TESTDIR, 0o777), f(f"{TESTDIR}/{EXE}", 0o777, exec=garbage),
        f(f"{TESTDIR}/exec_me", 0o700),  # TestLookPathUnixEmptyPath's file: created 0700, empty
        d(OTHER, 0o755), f(f"{OTHER}/{EXE}", 0o777, exec=garbage),
    ])
    return MergedFS.from_layers([base_layer(), layer])


def _lookup(fs: MergedFS, case: GoCase) -> tuple[str, str | None, list[str]]:
    path = case.path.replace("$ORIG", ORIG_PATH)
    container = Container(name="go", image="go-test", command=(case.name,), working_dir=TESTDIR,
                          env=(EnvVar("PATH", path),))
    pod = PodSpec(containers=(container,))
    ctx = ExecContext(container=container, pod=pod, config=ImageConfig(), fs=fs, node=AMD64, image_platform=AMD64)
    process, _ = effective_process(container, ctx.config)
    identity, _ = resolve_identity(pod, container, "", fs, ctx.runtime)
    assert process is not None and identity is not None
    judge = Judge(ctx, process, identity, identity.creds, pod_mounts(pod, container, fs))
    res = judge.lookup(case.name)
    rules = [x.rule for x in judge.findings]
    if res is not None:
        return FOUND, res.path, rules
    if any("relative_entry" in x.evidence for x in judge.findings):
        return ERR_DOT, None, rules
    return NOT_FOUND, None, rules


@pytest.mark.parametrize("case", CASES, ids=[f"{c.source} PATH={c.path or '(empty)'} {c.name}" for c in CASES])
def test_canrun_looks_up_as_go_exec_lookpath(case: GoCase) -> None:
    fs = _image()
    outcome, found, rules = _lookup(fs, case)
    assert outcome == case.outcome, (found, rules)
    if case.outcome == FOUND:
        assert found is not None and found.startswith(case.found or "")
    else:
        assert rules == ["command-not-found"]


@pytest.mark.parametrize("case", [c for c in CASES if c.outcome == FOUND], ids=lambda c: f"{c.path} {c.name}")
def test_a_found_execabs_test_then_fails_with_enoexec(case: GoCase) -> None:
    """Go's ``cmd.Run()`` after a successful lookup fails with an exec error (the file is three bytes)."""
    fs = _image()
    container = Container(name="go", image="go-test", command=(case.name,), working_dir=TESTDIR,
                          env=(EnvVar("PATH", case.path.replace("$ORIG", ORIG_PATH)),))
    ctx = ExecContext(container=container, pod=PodSpec(containers=(container,)), config=ImageConfig(), fs=fs,
                      node=AMD64, image_platform=AMD64)
    assert [x.rule for x in check_container(ctx)] == ["exec-format"]


def test_the_image_holds_what_the_go_tests_create() -> None:
    fs = _image()
    node = fs.lookup(f"{TESTDIR}/{EXE}")
    assert node is not None and node.type is EntryType.FILE and node.mode == 0o777
