"""Linux's binfmt_script selftest, three ways: canrun's ``#!`` parser, the machine's kernel, and ``canrun check``.

The kernel and ``canrun check`` see the same bytes: the cases are built into
one image (umoci), pushed to the real registry and judged there, and the same
image layout is unpacked (umoci) and exec'd by the kernel under chroot, each
script run from ``/t`` as the selftest runs them from its directory.  The
interpreter each good case names is a static busybox (the selftest writes a
perl script; under chroot there is no perl, and what is tested is the first
``#!`` line).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from canrun.image.binary import parse_exec_header
from canrun.image.model import ScriptInfo
from tests.conformance.binfmt_cases import CASES, Case
from tests.integration.conftest import canrun
from tests.support import images
from tests.support.registry import RunningRegistry

IDS = [c.name for c in CASES]
WORKDIR = "/t"


def _script(index: int) -> str:
    return f"{WORKDIR}/binfmt_script-{index:02d}"


def test_the_table_is_whole() -> None:
    assert len(CASES) == 27 and sum(not c.good for c in CASES) == 8


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_parser_cuts_the_line_as_the_kernel(case: Case) -> None:
    """A good case yields exactly its interpreter path; a bad one never yields the path it was built around."""
    text, interpreter = case.parts()
    info = parse_exec_header(text.encode()[:images_exec_head()], complete=True)
    if case.good:
        assert isinstance(info, ScriptInfo) and info.interpreter == interpreter
    else:
        assert not (isinstance(info, ScriptInfo) and info.interpreter and info.interpreter == interpreter)


def images_exec_head() -> int:
    from canrun.image.limits import DEFAULT_LIMITS
    return DEFAULT_LIMITS.exec_head_size


def _recipe() -> images.Image:
    ops: list[images.Op] = [images.Dir(WORKDIR), images.File("/bin/busybox", source=images.HOST_BUSYBOX)]
    for i, case in enumerate(CASES):
        text, interpreter = case.parts()
        ops.append(images.File(_script(i), data=text.encode(), mode=0o755))
        if interpreter:
            ops.append(images.File(f"{WORKDIR}/{interpreter.removeprefix('./')}", source=images.HOST_BUSYBOX))
    ops.append(images.File(f"{WORKDIR}/dir-interp.sh", data=b"#!/t\n", mode=0o755))  # EACCES control
    return images.Image("binfmt-script", (tuple(ops),), images.Config(workingdir=WORKDIR))


@pytest.fixture(scope="module")
def layout() -> Path:
    try:
        return images.build_image(_recipe())
    except images.BuildError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def verdicts(layout: Path, local_registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, list[dict[str, object]]]:
    """``canrun check`` on one pod running every case from /t: container name -> blocking findings."""
    ref = f"{local_registry.host}/conformance/binfmt-script:1"
    images.push(layout, ref)
    work = tmp_path_factory.mktemp("binfmt")
    scripts = [*(_script(i) for i in range(len(CASES))), f"{WORKDIR}/dir-interp.sh"]
    containers = "".join(f"  - name: c{i:02d}\n    image: {ref}\n    command: [\"{s}\"]\n    workingDir: {WORKDIR}\n"
                         for i, s in enumerate(scripts))
    manifest = work / "pod.yaml"
    manifest.write_text(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: binfmt}}\nspec:\n  containers:\n{containers}")
    run = canrun("check", "-f", str(manifest), "--format", "json", "--platform", "linux/amd64",
                 cache_dir=work / "cache")
    assert run.code in (0, 1), run
    out: dict[str, list[dict[str, object]]] = {f"c{i:02d}": [] for i in range(len(scripts))}
    for f in run.findings:
        if f["severity"] == "error" and f["container"] in out:
            out[str(f["container"])].append(f)
    return out


@pytest.mark.registry
@pytest.mark.parametrize("index", range(len(CASES)), ids=IDS)
def test_canrun_check_agrees_with_the_selftest(verdicts: dict[str, list[dict[str, object]]], index: int) -> None:
    case, found = CASES[index], verdicts[f"c{index:02d}"]
    assert (not found) is case.good, found


EMPTY = [i for i, c in enumerate(CASES) if c.name == "empty"]


@pytest.mark.registry
def test_empty_interpreter_is_the_kernels_eacces(verdicts: dict[str, list[dict[str, object]]]) -> None:
    """Same verdict as an interpreter that is a directory (EACCES), which the kernel gives for ``#!`` alone."""
    control = {f["rule"] for f in verdicts[f"c{len(CASES):02d}"]}
    assert control == {"command-not-executable"}
    assert {f["rule"] for f in verdicts[f"c{EMPTY[0]:02d}"]} == control


@pytest.fixture(scope="module")
def rootfs(layout: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = tmp_path_factory.mktemp("binfmt-bundle") / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{images.TAG}", str(bundle)], check=True,
                   capture_output=True)
    return bundle / "rootfs"


@pytest.mark.oracle
@pytest.mark.skipif(os.geteuid() != 0, reason="the kernel oracle needs root (chroot)")
@pytest.mark.parametrize("index", [*range(len(CASES)), len(CASES)], ids=[*IDS, "dir-interp-control"])
def test_kernel_agrees_with_the_selftest(rootfs: Path, index: int) -> None:
    from tests.oracle.kernel import kernel_exec
    script = _script(index) if index < len(CASES) else f"{WORKDIR}/dir-interp.sh"
    result = kernel_exec(str(rootfs), script, uid=0, gid=0, groups=(), caps=frozenset(), cwd=WORKDIR)
    if index == len(CASES):
        assert result.name == "EACCES"
        return
    assert (result.errno == 0) is CASES[index].good, result.name
    if CASES[index].name == "empty":
        assert result.name == "EACCES"  # what the canrun verdict above is compared with
