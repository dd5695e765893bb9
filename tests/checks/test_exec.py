"""runc's lookup and the kernel's execve, rule by rule: each firing and each not firing."""

from __future__ import annotations

import pytest

from canrun.findings import Severity
from canrun.image.model import ElfInfo, ImageConfig, UnknownFormat
from canrun.platform import Platform

from .build import (
    ARM64, DYN_AMD64, GLIBC_LOADER, STATIC_ARM64, base_layer, container, d, errors, f, hard, layer, merged,
    rules, run, script, sym, wh,
)


def image(*extra, upper=()):
    layers = [base_layer(*extra)]
    if upper:
        layers.append(layer(*upper))
    return merged(*layers)


# --------------------------------------------------------------------------- found / not found
def test_existing_static_binary_passes() -> None:
    assert run(image(d("/app"), f("/app/server", 0o755)), container(["/app/server"])) == []


def test_missing_command() -> None:
    found = run(image(), container(["/app/server"]))
    assert rules(found) == ["command-not-found"]
    assert "'/app/server'" in found[0].message and "/app does not exist" in found[0].message
    assert found[0].evidence["path"] == "/app/server"
    found = run(image(d("/app")), container(["/app/server"]))
    assert "/app/server does not exist" in found[0].message


def test_command_deleted_by_whiteout_names_the_layer() -> None:
    fs = image(d("/app"), f("/app/server", 0o755), upper=[wh("/app/server")])
    found = run(fs, container(["/app/server"]))
    assert rules(found) == ["command-not-found"]
    assert "deleted by layer 2 of 2" in found[0].message
    assert found[0].evidence["removed_by_layer"] == 2


def test_dangling_and_looping_symlinks() -> None:
    found = run(image(sym("/bin/python", "python3.11")), container(["/bin/python"]))
    assert rules(found) == ["command-not-found"]
    assert "/bin/python3.11" in found[0].message and found[0].evidence["hops"] == [
        {"link": "/bin/python", "target": "python3.11"}]
    found = run(image(sym("/bin/a", "b"), sym("/bin/b", "a")), container(["/bin/a"]))
    assert rules(found) == ["command-not-found"] and "ELOOP" in found[0].message


def test_path_through_a_file_is_enotdir() -> None:
    found = run(image(), container(["/bin/busybox/sh"]))
    assert rules(found) == ["command-not-found"] and "not a directory" in found[0].message


def test_bare_name_walks_path_through_merged_usr() -> None:
    fs = merged(layer(d("/usr"), d("/usr/bin"), sym("/bin", "usr/bin"), f("/usr/bin/dash", 0o755),
                      sym("/usr/bin/sh", "dash")))
    assert run(fs, container(["sh"])) == []
    assert run(fs, container(["/bin/sh", "-c", "true"])) == []


def test_bare_name_not_on_path() -> None:
    found = run(image(d("/opt"), d("/opt/bin"), f("/opt/bin/tool", 0o755)), container(["tool"]))
    assert rules(found) == ["command-not-found"]
    assert "executable file not found in $PATH" in found[0].message
    assert found[0].evidence["searched"][0] == "/usr/local/sbin"
    # the image's PATH makes it found
    assert run(image(d("/opt"), d("/opt/bin"), f("/opt/bin/tool", 0o755)), container(["tool"]),
               config=ImageConfig(env=("PATH=/opt/bin:/bin",))) == []
    # the container's PATH overrides the image's
    found = run(image(d("/opt"), d("/opt/bin"), f("/opt/bin/tool", 0o755)),
                container(["tool"], env=[("PATH", "/bin")]), config=ImageConfig(env=("PATH=/opt/bin",)))
    assert rules(found) == ["command-not-found"]


def test_path_lookup_skips_directories_and_non_executables() -> None:
    extra = [d("/usr/local"), d("/usr/local/bin"), f("/usr/local/bin/app", 0o644), d("/usr/local/sbin"),
             d("/usr/local/sbin/app"), f("/usr/bin/app", 0o755)]
    assert run(image(*extra), container(["app"])) == []
    # without the executable one, the skipped candidates are named
    found = run(image(*extra[:-1]), container(["app"]))
    assert rules(found) == ["command-not-found"]
    assert "/usr/local/bin/app (not executable: mode 0644" in found[0].message
    assert "/usr/local/sbin/app (a directory)" in found[0].message
    assert "chmod" in found[0].hint


def test_path_lookup_skip_depends_on_the_user() -> None:
    # 0700 root-owned first on PATH, 0755 later: root takes the first, uid 1000 without DAC_OVERRIDE the second
    extra = [d("/usr/local"), d("/usr/local/bin"), f("/usr/local/bin/app", 0o700), f("/usr/bin/app", 0o755)]
    assert run(image(*extra), container(["app"], user=1000, drop=["ALL"])) == []
    found = run(image(*extra[:-1]), container(["app"], user=1000, drop=["ALL"]))
    assert rules(found) == ["command-not-found"]


def test_empty_path_and_empty_command() -> None:
    assert rules(run(image(), container(["sh"], env=[("PATH", "")]))) == ["command-not-found"]
    assert rules(run(image(), container([""]))) == ["command-not-found"]


def test_a_hit_through_an_empty_or_relative_path_entry_is_refused_as_runc_refuses_it() -> None:
    """Go >= 1.19 exec.LookPath (runc) returns ErrDot for a hit whose joined path is not absolute."""
    fs = image(d("/app"), f("/app/server", 0o755), d("/app/node_modules"), d("/app/node_modules/.bin"),
               f("/app/node_modules/.bin/tsc", 0o755))
    found = run(fs, container(["server"], working_dir="/app", env=[("PATH", ":/bin")]))
    assert rules(found) == ["command-not-found"]
    assert "cannot run executable found relative to current directory" in found[0].message
    assert found[0].evidence["relative_entry"] == "." and "PATH=:/bin" in found[0].message
    assert "absolute directories" in found[0].hint and "./server" in found[0].hint
    found = run(fs, container(["tsc"], working_dir="/app", env=[("PATH", "./node_modules/.bin:/usr/bin")]))
    assert rules(found) == ["command-not-found"] and found[0].evidence["relative_entry"] == "./node_modules/.bin"
    # the lookup stops at the relative hit even though a later absolute entry has the program
    both = image(d("/app"), f("/app/sh", 0o755))
    assert rules(run(both, container(["sh"], working_dir="/app", env=[("PATH", "/usr/bin:.:/bin")]))) == [
        "command-not-found"]
    # an empty entry that finds nothing is passed over; absolute entries and ./name are fine
    assert run(fs, container(["sh"], working_dir="/app", env=[("PATH", ":/bin")])) == []
    assert run(fs, container(["./server"], working_dir="/app", env=[("PATH", ":/bin")])) == []
    assert run(fs, container(["server"], working_dir="/app", env=[("PATH", "/app:/bin")])) == []


def test_env_shebang_lookup_follows_execvp_which_runs_relative_hits() -> None:
    """GNU and busybox env call execvp, which runs what an empty or relative PATH entry finds (no ErrDot)."""
    env = [d("/usr/bin"), hard("/usr/bin/env", "/bin/busybox")]
    fs = image(d("/app"), script("/app/run.py", "#!/usr/bin/env python3"), f("/app/python3", 0o755), *env)
    c = container(["/app/run.py"], working_dir="/app", env=[("PATH", ":/usr/bin:/bin")])
    assert run(fs, c) == []
    # without the relative entry env does not find it: the warning
    c = container(["/app/run.py"], working_dir="/app", env=[("PATH", "/usr/bin:/bin")])
    assert rules(run(fs, c)) == ["interpreter-not-found"]


def test_relative_command_is_relative_to_cwd() -> None:
    fs = image(d("/app"), f("/app/run", 0o755))
    assert run(fs, container(["./run"], working_dir="/app")) == []
    assert rules(run(fs, container(["./run"]))) == ["command-not-found"]
    assert run(fs, container(["./run"]), config=ImageConfig(working_dir="/app")) == []
    # a missing working directory is created by runc: relative lookups start there
    assert rules(run(fs, container(["./run"], working_dir="/nope"))) == ["command-not-found"]
    assert run(fs, container(["../app/run"], working_dir="/nope")) == []


# --------------------------------------------------------------------------- permissions
def test_directory_is_not_executable() -> None:
    found = run(image(d("/app")), container(["/app"]))
    assert rules(found) == ["command-not-executable"] and "is a directory" in found[0].message


def test_no_execute_bit_fails_even_for_root() -> None:
    found = run(image(d("/app"), f("/app/run.sh", 0o644)), container(["/app/run.sh"]))
    assert rules(found) == ["command-not-executable"]
    msg = found[0].message
    assert "mode 0644 owned by 0:0" in msg and "uid 0" in msg and "added by layer 1 of 1" in msg
    assert found[0].evidence["mode"] == "0644"
    assert "chmod 0755 /app/run.sh" in found[0].hint


ROOT_0700 = (d("/app"), f("/app/server", 0o700))


def test_dac_override_kept_under_containerd_is_a_warning() -> None:
    found = run(image(*ROOT_0700), container(["/app/server"], user=1000))
    assert errors(found) == []
    assert rules(found) == ["command-not-executable"] and found[0].severity is Severity.WARNING
    assert "CAP_DAC_OVERRIDE" in found[0].message and "containerd" in found[0].message
    assert found[0].evidence["hangs_on"] == "CAP_DAC_OVERRIDE"
    found = run(image(*ROOT_0700), container(["/app/server"], user=1000), runtime="cri-o")
    assert [x.severity for x in found] == [Severity.WARNING]


@pytest.mark.parametrize("runtime,drop", [("docker", ()), ("containerd", ("ALL",)), ("containerd", ("DAC_OVERRIDE",)),
                                          ("cri-o", ("ALL",))])
def test_without_dac_override_non_root_cannot_exec_0700(runtime, drop) -> None:
    found = run(image(*ROOT_0700), container(["/app/server"], user=1000, drop=drop), runtime=runtime)
    assert rules(errors(found)) == ["command-not-executable"]
    assert "with CAP_DAC_OVERRIDE it would run" in found[0].message


def test_added_dac_override_after_drop_all() -> None:
    found = run(image(*ROOT_0700), container(["/app/server"], user=1000, drop=["ALL"], add=["DAC_OVERRIDE"]))
    assert errors(found) == [] and [x.severity for x in found] == [Severity.WARNING]


@pytest.mark.parametrize("runtime", ["cri-o", "docker"])
def test_cap_prefixed_names_work_where_the_runtime_strips_the_prefix(runtime) -> None:
    found = run(image(*ROOT_0700), container(["/app/server"], drop=["ALL"], add=["CAP_DAC_OVERRIDE"]),
                runtime=runtime)
    assert errors(found) == []  # root with DAC_OVERRIDE added back
    found = run(image(*ROOT_0700), container(["/app/server"], user=1000, drop=["CAP_DAC_OVERRIDE"]),
                runtime="cri-o")
    assert rules(errors(found)) == ["command-not-executable"] and "CAP_ prefix" not in found[0].message


def test_containerd_ignores_cap_prefixed_names_and_says_so() -> None:
    """containerd builds "CAP_" + name: drop [CAP_DAC_OVERRIDE] drops nothing, add [CAP_DAC_OVERRIDE] adds nothing."""
    kept = run(image(*ROOT_0700), container(["/app/server"], user=1000, drop=["CAP_DAC_OVERRIDE"]))
    assert errors(kept) == [] and [x.severity for x in kept] == [Severity.WARNING]
    assert "CAP_DAC_OVERRIDE names nothing" in kept[0].message
    lost = run(image(*ROOT_0700), container(["/app/server"], user=1000, drop=["ALL"], add=["CAP_DAC_OVERRIDE"]))
    assert rules(errors(lost)) == ["command-not-executable"]
    assert "without the CAP_ prefix" in lost[0].message and "with CAP_DAC_OVERRIDE it would run" in lost[0].message


def test_root_needs_dac_override_for_others_files() -> None:
    fs = image(d("/app"), f("/app/server", 0o700, uid=1000))
    assert run(fs, container(["/app/server"])) == []  # root keeps it: no warning
    assert rules(run(fs, container(["/app/server"], drop=["ALL"]))) == ["command-not-executable"]
    assert rules(run(fs, container(["/app/server"], user=1000, drop=["ALL"]))) == []  # the owner


def test_owner_class_only() -> None:
    # owner has no x, other has: the owner is refused (one class applies), others may run it
    fs = image(d("/app"), f("/app/server", 0o605, uid=1000, gid=1000))
    assert rules(errors(run(fs, container(["/app/server"], user=1000, drop=["ALL"])))) == ["command-not-executable"]
    assert run(fs, container(["/app/server"], user=2000, drop=["ALL"])) == []
    # gid 0 matches the file's group 0: the group class (no x) applies, not other
    fs = image(d("/app"), f("/app/server", 0o605, uid=1000, gid=0))
    assert rules(run(fs, container(["/app/server"], user=2000, drop=["ALL"]))) == ["command-not-executable"]


def test_group_class_through_supplementary_groups() -> None:
    fs = image(d("/app"), f("/app/server", 0o750, gid=50))
    # "app" is a member of group 50 (staff) in /etc/group
    assert run(fs, container(["/app/server"], drop=["ALL"]), config=ImageConfig(user="app")) == []
    assert rules(run(fs, container(["/app/server"], user=2000, drop=["ALL"]))) == ["command-not-executable"]
    from canrun.spec import SecurityContext

    assert run(fs, container(["/app/server"], user=2000, drop=["ALL"]),
               pod_sc=SecurityContext(supplemental_groups=(50,))) == []
    assert run(fs, container(["/app/server"], user=2000, drop=["ALL"]), pod_sc=SecurityContext(fs_group=50)) == []


def test_unsearchable_directory() -> None:
    fs = image(d("/secret", 0o700), f("/secret/tool", 0o755))
    found = run(fs, container(["/secret/tool"], user=1000, drop=["ALL"]))
    assert rules(found) == ["command-not-executable"]
    assert "directory /secret (mode 0700, owner 0:0) is not searchable" in found[0].message
    found = run(fs, container(["/secret/tool"], user=1000))
    assert [x.severity for x in found] == [Severity.WARNING]


# --------------------------------------------------------------------------- ELF
def test_foreign_elf_is_exec_format() -> None:
    fs = image(d("/app"), f("/app/server", 0o755, exec=STATIC_ARM64))
    found = run(fs, container(["/app/server"]))
    assert rules(found) == ["exec-format"]
    assert "AArch64" in found[0].message and "linux/amd64" in found[0].message
    assert found[0].evidence["elf_runs_on_node"] is False
    assert run(fs, container(["/app/server"]), node=ARM64) == []


def test_386_runs_on_amd64_but_amd64_not_on_386() -> None:
    fs = image(d("/app"), f("/app/server", 0o755, exec=ElfInfo(32, True, 3)))
    assert run(fs, container(["/app/server"])) == []
    fs64 = image(d("/app"), f("/app/server", 0o755))
    assert rules(run(fs64, container(["/app/server"]), node=Platform("linux", "386"))) == ["exec-format"]


def test_mislabeled_single_platform_image_is_judged_by_its_code() -> None:
    fs = image(d("/app"), f("/app/server", 0o755))
    found = run(fs, container(["/app/server"]), image_platform=ARM64)
    assert rules(found) == ["not-verified"] and found[0].evidence["elf_runs_on_node"] is True


def test_missing_loader() -> None:
    fs = image(d("/app"), f("/app/server", 0o755, exec=DYN_AMD64))
    found = run(fs, container(["/app/server"]))
    assert rules(found) == ["loader-not-found"]
    assert GLIBC_LOADER in found[0].message and "CGO_ENABLED=0" in found[0].hint


def test_loader_through_symlink_passes_and_must_be_executable() -> None:
    loader = [d("/lib"), d("/lib/x86_64-linux-gnu"), f("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", 0o755),
              d("/lib64"), sym("/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")]
    fs = image(d("/app"), f("/app/server", 0o755, exec=DYN_AMD64), *loader)
    assert run(fs, container(["/app/server"])) == []
    broken = [*loader[:2], f("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", 0o644), *loader[3:]]
    fs = image(d("/app"), f("/app/server", 0o755, exec=DYN_AMD64), *broken)
    found = run(fs, container(["/app/server"]))
    assert rules(found) == ["command-not-executable"] and "loader" in found[0].message


def test_unknown_format_is_enoexec() -> None:
    fs = image(d("/app"), f("/app/data", 0o755, exec=UnknownFormat(b"PK\x03\x04")))
    found = run(fs, container(["/app/data"]))
    assert rules(found) == ["exec-format"] and "runc does not fall back to sh" in found[0].message


# --------------------------------------------------------------------------- scripts
def test_script_with_present_interpreter_passes() -> None:
    fs = image(d("/app"), script("/app/run.sh", "#!/bin/sh"))
    assert run(fs, container(["/app/run.sh"])) == []


def test_missing_interpreter() -> None:
    fs = image(d("/app"), script("/app/run.sh", "#!/bin/bash -e"))
    found = run(fs, container(["/app/run.sh"]))
    assert rules(found) == ["interpreter-not-found"]
    assert "'#!/bin/bash -e'" in found[0].message and "/bin/bash does not exist" in found[0].message


def test_crlf_interpreter() -> None:
    fs = image(d("/app"), script("/app/run.sh", "#!/bin/sh\r"))
    found = run(fs, container(["/app/run.sh"]))
    assert rules(found) == ["interpreter-not-found"]
    assert "CRLF" in found[0].message and "/bin/sh itself exists" in found[0].message
    assert "dos2unix" in found[0].hint and found[0].evidence["crlf"] is True


def test_interpreter_must_be_executable_and_runnable() -> None:
    fs = image(d("/app"), script("/app/run.sh", "#!/opt/py"), f("/opt/py", 0o644))
    found = run(fs, container(["/app/run.sh"]))
    assert rules(found) == ["command-not-executable"] and "interpreter /opt/py" in found[0].message
    fs = image(d("/app"), script("/app/run.sh", "#!/opt/py"), f("/opt/py", 0o755, exec=STATIC_ARM64))
    assert rules(run(fs, container(["/app/run.sh"]))) == ["exec-format"]
    fs = image(d("/app"), script("/app/run.sh", "#!/opt/py"), f("/opt/py", 0o755, exec=DYN_AMD64))
    assert rules(run(fs, container(["/app/run.sh"]))) == ["loader-not-found"]


@pytest.mark.parametrize("scripts,ok", [(5, True), (6, False)])
def test_interpreter_chain_depth(scripts: int, ok: bool) -> None:
    entries = [d("/s")]
    for i in range(scripts):
        nxt = f"/s/{i + 1}" if i < scripts - 1 else "/bin/busybox"
        entries.append(script(f"/s/{i}", f"#!{nxt}"))
    found = run(image(*entries), container(["/s/0"]))
    assert (found == []) is ok
    if not ok:
        assert rules(found) == ["exec-format"] and "ELOOP" in found[0].message


def test_env_shebang_checks_the_program_on_path() -> None:
    env = [d("/usr/bin"), hard("/usr/bin/env", "/bin/busybox")]
    fs = image(d("/app"), script("/app/run.py", "#!/usr/bin/env python3"), *env)
    found = run(fs, container(["/app/run.py"]))
    assert rules(found) == ["interpreter-not-found"] and found[0].severity is Severity.WARNING
    assert "python3" in found[0].message and "exit 127" in found[0].message
    fs = image(d("/app"), script("/app/run.py", "#!/usr/bin/env python3"), *env, f("/usr/bin/python3", 0o755))
    assert run(fs, container(["/app/run.py"])) == []
    fs = image(d("/app"), script("/app/run.py", "#!/usr/bin/env -S python3 -u"), *env, f("/usr/bin/python3", 0o755))
    assert run(fs, container(["/app/run.py"])) == []
    fs = image(d("/app"), script("/app/run.py", "#!/usr/bin/env python3\r"), *env, f("/usr/bin/python3", 0o755))
    found = run(fs, container(["/app/run.py"]))
    assert rules(found) == ["interpreter-not-found"] and found[0].evidence["crlf"] is True


def test_shebang_via_path_lookup_and_args_only() -> None:
    fs = image(d("/app"), script("/app/entry.sh", "#!/bin/bash"))
    cfg = ImageConfig(entrypoint=("/app/entry.sh",), cmd=("serve",))
    found = run(fs, container(args=["migrate"]), config=cfg)
    assert rules(found) == ["interpreter-not-found"] and "the image ENTRYPOINT" in found[0].message
    # command alone replaces the broken entrypoint
    assert run(fs, container(["/bin/sh"]), config=cfg) == []


def test_shebang_without_an_interpreter_name_is_eacces_as_the_kernel_says() -> None:
    """``#!``, ``#!\\0./perl``, ``#!`` + spaces + NUL: binfmt_script opens "", the working directory."""
    from canrun.image.binary import parse_shebang

    for head in (b"#!", b"#!\0./perl\n", b"#!   \0\n"):
        found = run(image(d("/app"), f("/app/run", 0o755, exec=parse_shebang(head))),
                    container(["/app/run"], working_dir="/app"))
        assert rules(found) == ["command-not-executable"], head
        assert "names no interpreter" in found[0].message and "(/app)" in found[0].message
        assert found[0].evidence["interpreter"] == "" and "#!/bin/sh" in found[0].hint
    # with a newline right after (only spaces between), the kernel refuses the line: ENOEXEC
    assert rules(run(image(d("/app"), script("/app/run", "#!  ")), container(["/app/run"]))) == ["exec-format"]
    # a name, even one that does not exist, is still interpreter-not-found
    assert rules(run(image(d("/app"), script("/app/run", "#!/nope")), container(["/app/run"]))) == [
        "interpreter-not-found"]


def test_lookups_through_padded_symlinks_and_a_huge_path_stop_at_a_work_bound() -> None:
    """40 symlinks chaining into each other through runs of ./ and a PATH of 1,500 entries through them: the
    judgement stops at its work bound with not-verified instead of walking 120 million components."""
    from canrun.image.walk import MAX_WALK_COMPONENTS

    pad = "./" * 2000
    links = [sym(f"/s{i}", pad + (f"s{i + 1}" if i < 39 else "d")) for i in range(40)]
    fs = image(d("/d"), *links)
    path = ":".join(f"/s0/p{i}" for i in range(1500))
    found = run(fs, container(["tool"], env=[("PATH", path)]))
    assert rules(found) == ["not-verified"], found
    assert "was not judged" in found[0].message and "path components" in found[0].message
    # one lookup longer than the kernel ever walks stops too, and says so
    deep = "/" + "/".join(["."] * (MAX_WALK_COMPONENTS + 10)) + "/bin/sh"
    found = run(image(), container([deep]))
    assert rules(found) == ["not-verified"] and "more than the kernel ever walks" in found[0].message
    # an ordinary PATH through the same symlinks is judged as before
    assert rules(run(image(d("/d"), *links, f("/d/tool", 0o755)), container(["tool"], env=[("PATH", "/s0")]))) == []
