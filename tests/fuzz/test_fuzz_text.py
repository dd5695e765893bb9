"""Text from outside: YAML manifests, ``/etc/passwd`` and ``/etc/group``, ``WWW-Authenticate``, image references,
``#!`` lines and ELF headers.

Assertions: the manifest loader collects ``ManifestError``s and raises nothing; the passwd/group,
challenge and exec-header parsers never raise (they are tolerant by contract); ``Reference.parse`` raises
only ``InvalidReference``.  All in bounded time and memory.
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from canrun.errors import CanrunError, InvalidReference
from canrun.image.binary import parse_exec_header
from canrun.image.users import ImageUser, UserDB, parse_group, parse_passwd
from canrun.kube.manifests import load_text
from canrun.kube.yamldoc import ManifestLimits
from canrun.registry.auth import parse_challenges, pick_challenge
from canrun.registry.reference import Reference

from .budget import FUZZ, bounded

NOTHING: tuple[type[BaseException], ...] = ()
LIMITS = ManifestLimits(max_file_bytes=1 << 20)

yaml_pieces = st.sampled_from([
    "apiVersion: v1\n", "kind: Pod\n", "metadata:\n  name: x\n", "spec:\n  containers:\n  - name: a\n    image: b\n",
    "---\n", "...\n", "&a [*a]\n", "x: &a\n  - *a\n", "<<: *a\n", "a: !!binary AAAA\n", "? [a]\n: b\n",
    "{{ .Values.image }}\n", "a: {b: [c, {d: e}]}\n", "\t- bad\n", "a: 'unterminated\n", "%YAML 1.1\n", "a: 0x1F\n",
    "b: 1e400\n", "c: .nan\n", "d: 2001-12-14t21:59:43.10-05:00\n", "e: !!python/object:os.system x\n", "\ufeff",
    "- " * 50 + "x\n", "[" * 200 + "\n", "a: b: c\n", "\x00\n", "kind: List\nitems:\n- kind: Pod\n",
])
billion_laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(9))
yaml_texts = st.one_of(st.lists(yaml_pieces, max_size=8).map("".join), st.text(max_size=200),
                       st.just(billion_laughs), st.binary(max_size=100))


@FUZZ
@given(yaml_texts)
def test_manifest_loader_collects_errors_and_raises_nothing(text: str | bytes) -> None:
    loaded = bounded(lambda: load_text(text, "fuzz.yaml", limits=LIMITS), allowed=NOTHING)
    assert all(isinstance(e, CanrunError) for e in loaded.errors)  # type: ignore[union-attr]


passwd_lines = st.one_of(
    st.builds(lambda n, u, g, h, s: f"{n}:x:{u}:{g}::{h}:{s}", st.text(max_size=8), st.text(max_size=8),
              st.text(max_size=8), st.text(max_size=8), st.text(max_size=8)),
    st.sampled_from(["root:x:0:0:root:/root:/bin/sh", "::::::::::", ":", "9" * 5000 + ":x:" + "9" * 5000,
                     "a:x:-1:+2::/:", "a:x:\u0661\u0662:0::/:"]),
    st.text(max_size=40))
users_data = st.one_of(st.lists(passwd_lines, max_size=6).map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass")),
                       st.binary(max_size=200), st.none())


def read_users(passwd: bytes | None, group: bytes | None, user: str) -> None:
    db = UserDB(tuple(parse_passwd(passwd)), tuple(parse_group(group)), passwd is not None)
    parsed = ImageUser.parse(user)
    if parsed.name:
        db.by_name(parsed.name)
        db.memberships(parsed.name)
    if parsed.uid is not None:
        db.by_uid(parsed.uid)


@FUZZ
@given(users_data, users_data, st.text(max_size=20))
def test_passwd_and_group_parsers_never_raise(passwd: bytes | None, group: bytes | None, user: str) -> None:
    bounded(lambda: read_users(passwd, group, user), allowed=NOTHING)


tokens = st.sampled_from(["Bearer", "Basic", "bearer", "Digest", "realm", "service", "scope", "=", "==", ",", " ",
                          "\t", '"', "\\", '"https://auth.example.com/token"', '"a\\"b"', "repository:x:pull",
                          "abc==", "x=y", "\u00e9", ";"])
challenges = st.one_of(st.lists(tokens, max_size=30).map("".join), st.text(max_size=80),
                       st.integers(1, 20_000).map(lambda n: "Bearer " + 'a="' + "\\" * n),
                       st.integers(1, 20_000).map(lambda n: "Basic " + "a" * n + "=" * 3 + "x"))


@FUZZ
@given(challenges)
def test_www_authenticate_parser_never_raises(header: str) -> None:
    bounded(lambda: (parse_challenges(header), pick_challenge(header)), allowed=NOTHING)


ref_parts = st.sampled_from(["localhost", "example.com", "EXAMPLE.com", "[::1]", "127.0.0.1", ":", "/", "@", "a", "A",
                             "_", "__", "-", ".", "..", "sha256:", "ab" * 32, "library", "x" * 130, ":5000", ":0",
                             ":65536", ":" + "9" * 5000, "${TAG}", "{{x}}", " ", "\n", "http://", "é"])
references = st.one_of(st.lists(ref_parts, max_size=12).map("".join), st.text(max_size=80),
                       st.integers(1, 20_000).map(lambda n: "a" + "-a" * n), st.integers(1, 20_000).map(
                           lambda n: "a" * n + ".b/c"), st.integers(1, 5000).map(lambda n: "h/" + "a." * n + "!"))


@FUZZ
@given(references)
def test_image_reference_parser_raises_only_invalid_reference(text: str) -> None:
    outcome = bounded(lambda: Reference.parse(text), allowed=(InvalidReference,))
    if isinstance(outcome, Reference):
        assert Reference.parse(str(outcome)) == outcome  # what it prints, it reads back


shebangs = st.one_of(
    st.lists(st.sampled_from(["#!", " ", "\t", "/bin/sh", "\r", "\n", "\0", "-e", "x" * 300, "/usr/bin/env python3"]),
             max_size=10).map(lambda parts: "".join(parts).encode()),
    st.binary(max_size=300).map(lambda b: b"#!" + b))


@st.composite
def elf_heads(draw: st.DrawFn) -> bytes:
    cls = draw(st.sampled_from([1, 2, 0, 3]))
    data = draw(st.sampled_from([1, 2, 0]))
    order = "<" if data != 2 else ">"
    word = "I" if cls == 1 else "Q"
    phentsize = draw(st.sampled_from([32 if cls == 1 else 56, 0, 1, 65535]))
    phnum = draw(st.sampled_from([0, 1, 2, 3, 65535]))
    phoff = draw(st.sampled_from([52 if cls == 1 else 64, 0, 2**31, 2**63]))
    if word == "I":
        phoff = min(phoff, 2**32 - 1)
    ident = b"\x7fELF" + bytes([cls, data, 1]) + bytes(9)
    head = ident + struct.pack(f"{order}HHI{word}{word}{word}IHHH", draw(st.sampled_from([2, 3, 1, 0xFFFF])),
                               draw(st.integers(0, 0xFFFF)), 1, 0, phoff, 0, 0, 0, phentsize, phnum)
    for _ in range(draw(st.integers(0, 3))):
        p_type = draw(st.sampled_from([3, 1, 3]))
        offset = draw(st.sampled_from([len(head) + 120, 0, 2**31, 2**32 - 1]))
        filesz = draw(st.sampled_from([2, 11, 4096, 4097, 0, 2**32 - 1]))
        if cls == 1:
            head += struct.pack(f"{order}IIIIIIII", p_type, offset, 0, 0, filesz, filesz, 0, 0)
        else:
            head += struct.pack(f"{order}IIQQQQQQ", p_type, 0, offset, 0, 0, filesz, filesz, 0)
    head += draw(st.sampled_from([b"/lib/ld-linux.so.2\0", b"", b"\0" * 200, b"x" * 100]))
    return head[: draw(st.integers(0, len(head)))] if draw(st.booleans()) else head


@FUZZ
@given(st.one_of(shebangs, elf_heads(), st.binary(max_size=64)), st.booleans())
def test_exec_header_parser_never_raises(head: bytes, complete: bool) -> None:
    bounded(lambda: parse_exec_header(head, complete=complete), allowed=NOTHING)
