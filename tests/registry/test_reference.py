"""Image references are normalised exactly as containerd normalises the pod's ``image:`` string."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from canrun.errors import InvalidReference
from canrun.registry.reference import Reference

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, registry, repository, tag, digest", [
    ("nginx", "docker.io", "library/nginx", "latest", None),
    ("nginx:1.25", "docker.io", "library/nginx", "1.25", None),
    ("library/nginx", "docker.io", "library/nginx", "latest", None),
    ("bitnami/redis:7", "docker.io", "bitnami/redis", "7", None),
    ("docker.io/nginx", "docker.io", "library/nginx", "latest", None),
    ("index.docker.io/library/nginx:x", "docker.io", "library/nginx", "x", None),
    ("index.docker.io/nginx", "docker.io", "library/nginx", "latest", None),
    ("ghcr.io/org/app", "ghcr.io", "org/app", "latest", None),
    ("localhost/app", "localhost", "app", "latest", None),
    ("localhost:5000/team/app:dev", "localhost:5000", "team/app", "dev", None),
    ("127.0.0.1:5000/app", "127.0.0.1:5000", "app", "latest", None),
    ("[::1]:5000/app:v2", "[::1]:5000", "app", "v2", None),
    ("registry:5000/app", "registry:5000", "app", "latest", None),  # a ':' makes it a host
    ("registry:65535/app", "registry:65535", "app", "latest", None),
    ("registry:1/app", "registry:1", "app", "latest", None),
    ("quay.io/a/b/c/d:1.0-rc_2", "quay.io", "a/b/c/d", "1.0-rc_2", None),
    ("my-reg.example.com/a__b/c--d.e", "my-reg.example.com", "a__b/c--d.e", "latest", None),
    (f"nginx@{D}", "docker.io", "library/nginx", None, D),
    (f"nginx:1.25@{D}", "docker.io", "library/nginx", "1.25", D),
    (f"gcr.io/p/app:v1@{D}", "gcr.io", "p/app", "v1", D),
    ("localhost:5000", "docker.io", "library/localhost", "5000", None),  # docker reads this as name:tag too
])
def test_parse_normalises_like_containerd(text: str, registry: str, repository: str, tag: str | None,
                                          digest: str | None) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


def test_docker_hub_connects_to_its_api_host_but_keeps_the_canonical_name() -> None:
    ref = Reference.parse("nginx")
    assert str(ref) == "docker.io/library/nginx:latest"
    assert ref.api_host == "registry-1.docker.io"
    assert ref.familiar == "nginx:latest"
    assert Reference.parse("ghcr.io/a/b:1").api_host == "ghcr.io"


def test_digest_wins_over_tag_for_fetching() -> None:
    ref = Reference.parse(f"app:v1@{D}")
    assert ref.identifier == D
    assert Reference.parse("app:v1").identifier == "v1"


def test_with_digest_pins_and_keeps_the_tag_for_display() -> None:
    pinned = Reference.parse("ghcr.io/a/b:v1").with_digest(D)
    assert str(pinned) == f"ghcr.io/a/b:v1@{D}"
    with pytest.raises(InvalidReference):
        Reference.parse("a").with_digest("sha256:short")


@pytest.mark.parametrize("text, fragment", [
    ("", "empty image reference"),
    ("   ", "empty image reference"),
    ("<YOUR-CONTAINER>", "placeholder"),
    ("registry.example.com/<your-image>:latest", "placeholder"),
    ("{{ .Values.image }}", "placeholder"),
    ("${IMAGE}", "unexpanded variable"),
    ("ghcr.io/org/app:$TAG", "unexpanded variable"),
    ("$(IMAGE)", "unexpanded variable"),
    ("Nginx", "must be lowercase"),
    ("ghcr.io/Org/App:1", "must be lowercase"),
    ("nginx:", "invalid tag"),
    ("nginx:-bad", "invalid tag"),
    ("nginx:" + "t" * 129, "invalid tag"),
    ("nginx@sha256:abc", "sha256 needs 64"),
    ("nginx@md5:" + "a" * 32, "unsupported digest algorithm"),
    (f"nginx@{D}@{D}", "more than one '@'"),
    ("a" * 64, "image id"),
    ("ghcr.io//app", "invalid repository path"),
    ("app/", "invalid repository path"),
    ("-app", "invalid repository path"),
    ("https://ghcr.io/org/app", "drop the URL scheme"),
    ("nginx latest", "whitespace"),
    ("ghcr.io/" + "a" * 260, "longer than 255"),
    ("bad_host:5000x/app", "invalid registry host"),
    ("localhost:70716/app", "port 70716"),
    ("registry.example:0/app:v1", "not between 1 and 65535"),
    ("[::1]:65536/app", "port 65536"),
])
def test_invalid_references_say_why(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReference) as info:
        Reference.parse(text)
    assert fragment in str(info.value)


_alnum = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_component = st.builds(lambda parts, seps: parts[0] + "".join(s + p for s, p in zip(seps, parts[1:])),
                       st.lists(_alnum, min_size=1, max_size=3),
                       st.lists(st.sampled_from([".", "_", "__", "-", "--"]), min_size=2, max_size=2))
_label = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,5}[a-zA-Z0-9])?", fullmatch=True)
_host = st.one_of(
    st.builds(lambda a, b: f"{a}.{b}", _label, _label),
    st.builds(lambda a, p: f"{a}:{p}", _label, st.integers(1, 65535)),
    st.just("localhost"),
    st.builds(lambda p: f"[::1]:{p}", st.integers(1, 65535)),
)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_digest = st.builds(lambda b: "sha256:" + b.hex(), st.binary(min_size=32, max_size=32))


@given(host=st.none() | _host, path=st.lists(_component, min_size=1, max_size=3),
       tag=st.none() | _tag, digest=st.none() | _digest)
def test_parse_and_str_round_trip(host: str | None, path: list[str], tag: str | None, digest: str | None) -> None:
    # without a host, a first component with '.' or ':' (or "localhost") would be read as one: that is the grammar
    assume(host is not None or len(path) == 1 or not ("." in path[0] or path[0] == "localhost"))
    text = "/".join(([host] if host else []) + path)
    if tag:
        text += f":{tag}"
    if digest:
        text += f"@{digest}"
    ref = Reference.parse(text)
    assert Reference.parse(str(ref)) == ref
    assert Reference.parse(ref.familiar) == ref
    assert ref.digest == digest
    assert ref.tag == (tag if tag or digest else "latest")
    assert ref.repository.endswith("/".join(path))


@given(st.text(max_size=40))
def test_any_string_parses_or_raises_invalid_reference(text: str) -> None:
    try:
        ref = Reference.parse(text)
    except InvalidReference as exc:
        assert str(exc)
    else:
        assert Reference.parse(str(ref)) == ref
