"""Command, args, $(VAR) expansion, environment and working directory, as the kubelet and containerd compose them."""

from __future__ import annotations

import pytest

from canrun.checks.process import DEFAULT_PATH, effective_process, expand
from canrun.image.model import ImageConfig

from .build import base_layer, container, merged, rules, run

IMAGE = ImageConfig(entrypoint=("/entry",), cmd=("cmd-arg",))


def argv(c, config=IMAGE):
    process, _ = effective_process(c, config)
    return list(process.argv) if process else None


@pytest.mark.parametrize("command,args,expected", [
    (None, None, ["/entry", "cmd-arg"]),
    (["/bin/x"], None, ["/bin/x"]),  # command alone drops CMD
    (None, ["a", "b"], ["/entry", "a", "b"]),  # args alone replaces CMD, keeps ENTRYPOINT
    (["/bin/x"], ["a"], ["/bin/x", "a"]),
    ([], [], ["/entry", "cmd-arg"]),  # empty lists are "unset" once they cross the CRI
])
def test_command_args_compose(command, args, expected) -> None:
    assert argv(container(command, args)) == expected


def test_entrypoint_empty_string_counts_as_absent() -> None:
    config = ImageConfig(entrypoint=("",), cmd=("/bin/sh",))
    assert argv(container(), config) == ["/bin/sh"]
    assert argv(container(args=["/bin/true"]), config) == ["/bin/true"]


def test_no_command_anywhere() -> None:
    process, found = effective_process(container(), ImageConfig())
    assert process is None and rules(found) == ["no-command"]
    assert rules(run(merged(base_layer()), container(), config=ImageConfig())) == ["no-command"]
    # command alone without image config is fine
    assert run(merged(base_layer()), container(["/bin/sh"]), config=ImageConfig()) == []


def test_var_expansion_from_container_env_only() -> None:
    config = ImageConfig(env=("IMG=image-value",))
    c = container(["/bin/$(DIR)/x", "$(IMG)", "$$(DIR)", "$(MISSING)", "$$", "a$b", "$(OPEN"],
                  env=[("DIR", "app"), ("DERIVED", "$(DIR)-2")])
    assert argv(c, config) == ["/bin/app/x", "$(IMG)", "$(DIR)", "$(MISSING)", "$", "a$b", "$(OPEN"]
    c2 = container(["/$(DERIVED)"], env=[("DIR", "app"), ("DERIVED", "$(DIR)-2")])
    assert argv(c2) == ["/app-2"]


def test_expand_matches_kubelet_cases() -> None:
    env = {"VAR_A": "A", "VAR_B": "B"}

    def lookup(name):
        return env.get(name)

    cases = {
        "$(VAR_A)": "A", "___$(VAR_B)___": "___B___", "$(VAR_A)-$(VAR_A)": "A-A", "$$(VAR_B)": "$(VAR_B)",
        "$$$(VAR_A)": "$A", "$(VAR_C)": "$(VAR_C)", "$": "$", "$(": "$(", "$()": "$()", "f000-$$VAR_A": "f000-$VAR_A",
        "$(VAR_A$(VAR_B))": "$(VAR_A$(VAR_B))",
    }
    for text, expected in cases.items():
        assert expand(text, lookup, []) == expected, text


def test_value_from_variable_is_not_verified() -> None:
    c = container(["$(BIN)/server"], env=[("BIN", None)])
    found = run(merged(base_layer()), c)
    assert rules(found) == ["not-verified"]
    assert "valueFrom" in found[0].message


def test_path_default_then_image_then_container() -> None:
    p, _ = effective_process(container(["x"]), ImageConfig())
    assert p.env["PATH"] == DEFAULT_PATH
    p, _ = effective_process(container(["x"]), ImageConfig(env=("PATH=/opt/bin", "PATH=/opt/bin2")))
    assert p.env["PATH"] == "/opt/bin2"
    p, _ = effective_process(container(["x"], env=[("PATH", "/a"), ("PATH", "/b")]), ImageConfig(env=("PATH=/opt",)))
    assert p.env["PATH"] == "/b"


def test_working_dir_precedence() -> None:
    assert effective_process(container(["x"]), ImageConfig())[0].cwd == "/"
    assert effective_process(container(["x"]), ImageConfig(working_dir="/srv"))[0].cwd == "/srv"
    assert effective_process(container(["x"], working_dir="/w"), ImageConfig(working_dir="/srv"))[0].cwd == "/w"
