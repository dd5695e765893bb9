"""Who the process runs as: image USER, runAsUser/Group, passwd/group, supplementary groups, capabilities."""

from __future__ import annotations

from canrun.checks.users import ALL_CAPS, capabilities, resolve_identity
from canrun.image.model import ImageConfig
from canrun.image.users import ImageUser, parse_group, parse_passwd
from canrun.spec import Container, PodSpec, SecurityContext

from .build import GROUP, STATIC_AMD64, base_layer, container, errors, f, layer, merged, rules, run


def identity(user="", c=None, pod_sc=None, fs=None, runtime="containerd"):
    c = c or container(["/bin/sh"])
    return resolve_identity(PodSpec((c,), security_context=pod_sc), c, user, fs or merged(base_layer()), runtime)


def test_parse_passwd_and_group() -> None:
    users = parse_passwd(b"root:x:0:0:root:/root:/bin/sh\n\n  \nbad:x:notanumber:7\nshort\n")
    assert [(u.name, u.uid, u.gid) for u in users] == [("root", 0, 0), ("bad", 0, 7), ("short", 0, 0)]
    groups = parse_group(GROUP)
    assert [g.members for g in groups if g.name == "staff"] == [("app", "web")]


def test_image_user_forms() -> None:
    assert ImageUser.parse("1000:50") == ImageUser("1000:50", 1000, None, "50")
    assert ImageUser.parse("app:staff") == ImageUser("app:staff", None, "app", "staff")
    assert ImageUser.parse("") == ImageUser("", None, None)


def test_named_user_resolves_through_passwd_with_memberships() -> None:
    ident, found = identity("app")
    assert found == []
    assert (ident.uid, ident.gid, ident.username) == (1000, 1000, "app")
    assert 50 in ident.groups  # staff lists app as a member


def test_image_group_is_ignored() -> None:
    ident, found = identity("app:root")
    assert found == [] and ident.gid == 1000  # the passwd gid, not root's
    ident, found = identity("app:nosuchgroup")
    assert found == [] and ident.gid == 1000
    ident, _ = identity("4242:50")  # unknown uid: gid 0, not 50
    assert (ident.uid, ident.gid) == (4242, 0)


def test_unknown_name_is_user_not_found() -> None:
    ident, found = identity("nobody")
    assert ident is None and rules(found) == ["user-not-found"]
    assert "'nobody'" in found[0].message
    # an image without /etc/passwd at all
    ident, found = identity("app", fs=merged(layer()))
    assert rules(found) == ["user-not-found"] and "has none" in found[0].message


def test_run_as_user_ignores_image_user_and_takes_passwd_gid() -> None:
    ident, found = identity("nobody", c=container(["/bin/sh"], user=33))
    assert found == [] and (ident.uid, ident.gid, ident.username) == (33, 33, "web")
    ident, _ = identity("", c=container(["/bin/sh"], user=33, group=7))
    assert ident.gid == 7


def test_container_security_context_wins_over_pod() -> None:
    pod_sc = SecurityContext(run_as_user=1000, run_as_group=1000, supplemental_groups=(600,), fs_group=700)
    ident, _ = identity("", c=container(["/bin/sh"], user=33), pod_sc=pod_sc)
    assert (ident.uid, ident.gid) == (33, 1000)
    assert {600, 700, 50}.issubset(ident.groups)  # supplementalGroups + fsGroup + /etc/group membership (web)


def test_run_as_non_root() -> None:
    def nonroot(image_user, **kw):
        return rules(identity(image_user, c=container(["/bin/sh"], non_root=True, **kw))[1])

    assert nonroot("") == ["nonroot-conflict"]  # no USER: root
    assert nonroot("0") == ["nonroot-conflict"]
    assert nonroot("app") == ["nonroot-conflict"]  # a name cannot be verified
    assert nonroot("1000") == []
    assert nonroot("app", user=1000) == []
    assert nonroot("1000", user=0) == ["nonroot-conflict"]
    assert nonroot("", user=5) == []
    # runAsNonRoot at pod level applies too
    _, found = identity("", pod_sc=SecurityContext(run_as_non_root=True))
    assert rules(found) == ["nonroot-conflict"]


def test_capabilities_follow_containerd_order() -> None:
    assert "DAC_OVERRIDE" in capabilities("containerd", (), ())
    assert "DAC_OVERRIDE" in capabilities("cri-o", (), ())
    assert capabilities("containerd", (), ("ALL",)) == frozenset()
    assert capabilities("containerd", ("DAC_OVERRIDE",), ("ALL",)) == {"DAC_OVERRIDE"}
    assert "DAC_OVERRIDE" not in capabilities("containerd", ("DAC_OVERRIDE",), ("DAC_OVERRIDE",))
    # containerd prepends CAP_ to every name: a CAP_-prefixed one matches nothing; CRI-O and Docker strip it
    assert "DAC_OVERRIDE" in capabilities("containerd", (), ("CAP_DAC_OVERRIDE",))
    assert capabilities("containerd", ("CAP_DAC_OVERRIDE",), ("ALL",)) == frozenset()
    assert "DAC_OVERRIDE" not in capabilities("cri-o", (), ("CAP_DAC_OVERRIDE",))
    assert "DAC_OVERRIDE" not in capabilities("docker", (), ("cap_dac_override",))
    assert capabilities("containerd", ("dac_override",), ("all",)) == {"DAC_OVERRIDE"}
    assert "SYS_ADMIN" in capabilities("containerd", ("ALL",), ())


def test_privileged_means_every_capability_whatever_drop_says() -> None:
    assert capabilities("containerd", (), ("ALL",), privileged=True) == ALL_CAPS
    assert capabilities("cri-o", (), ("DAC_OVERRIDE",), privileged=True) >= {"DAC_OVERRIDE", "SYS_ADMIN"}
    sc = SecurityContext(run_as_user=1000, capabilities_drop=("ALL",), privileged=True)
    ident, _ = identity("", c=Container(name="c", image="i", security_context=sc))
    assert ident.creds.caps == ALL_CAPS
    # the pod has no privileged field: only the container's counts
    ident, _ = identity("", c=Container(name="c", image="i", security_context=SecurityContext(
        run_as_user=1000, capabilities_drop=("ALL",))), pod_sc=SecurityContext(privileged=True))
    assert ident.creds.caps == frozenset()


def test_privileged_root_700_binary_runs_for_a_non_root_user() -> None:
    fs = merged(base_layer(layer_entry := f("/app/tool", 0o710, exec=STATIC_AMD64)))
    assert layer_entry.mode == 0o710
    sc = SecurityContext(run_as_user=1000, capabilities_drop=("ALL",), privileged=True)
    c = Container(name="c", image="i", command=("/app/tool",), security_context=sc)
    assert "command-not-executable" not in [x.rule for x in errors(run(fs, c))]
    c = Container(name="c", image="i", command=("/app/tool",),
                  security_context=SecurityContext(run_as_user=1000, capabilities_drop=("ALL",)))
    assert "command-not-executable" in [x.rule for x in errors(run(fs, c))]


def test_docker_clears_non_root_capabilities() -> None:
    ident, _ = identity("app", runtime="docker")
    assert ident.creds.caps == frozenset() and "DAC_OVERRIDE" in ident.capabilities
    ident, _ = identity("", runtime="docker")
    assert "DAC_OVERRIDE" in ident.creds.caps  # root keeps them
    ident, _ = identity("app", runtime="containerd")
    assert "DAC_OVERRIDE" in ident.creds.caps


def test_user_not_found_stops_the_exec_checks() -> None:
    found = run(merged(base_layer()), container(["/nonexistent"]), config=ImageConfig(user="ghost"))
    assert rules(found) == ["user-not-found"]
