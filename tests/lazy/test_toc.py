"""TOC documents that are not what they claim: refused as unusable (the layer is then streamed)."""

from __future__ import annotations

import pytest

from canrun.errors import LimitExceeded
from canrun.image.tar import REGULAR, SYMLINK
from canrun.image.toc import TocUnusable, parse_entries
from canrun.image.toc_estargz import parse_footer

D = "sha256:" + "a" * 64


def parse(entries: list[object], limit: int = 10_000, max_entries: int = 100):  # type: ignore[no-untyped-def]
    return parse_entries({"version": 1, "entries": entries}, limit=limit, where="t", max_entries=max_entries)


def test_a_well_formed_toc_places_every_chunk() -> None:
    entries = parse([
        {"type": "dir", "name": "bin/", "mode": 0o40755},
        {"type": "reg", "name": "bin/app", "mode": 0o755, "size": 300, "offset": 100, "chunkSize": 100,
         "chunkDigest": D, "endOffset": 400},
        {"type": "chunk", "name": "bin/app", "offset": 200, "chunkOffset": 100, "chunkSize": 200, "chunkDigest": D},
        {"type": "reg", "name": "etc/passwd", "size": 10, "offset": 500, "digest": D},
        {"type": "symlink", "name": "bin/sh", "linkName": "app", "mode": 0o777},
    ])
    app = entries[1]
    assert [(c.file_offset, c.size, c.start, c.end) for c in app.chunks] == [(0, 100, 100, 200), (100, 200, 200, 400)]
    assert entries[0].mode == 0o755  # type bits dropped, as the tar reader does
    assert entries[2].chunks[0].end == 10_000  # the last data runs up to the TOC
    assert entries[3].type == SYMLINK and entries[3].linkname == "app"
    assert entries[1].type == REGULAR


@pytest.mark.parametrize("bad", [
    [{"type": "socket", "name": "x"}],
    [{"type": "chunk", "name": "x", "offset": 5, "chunkOffset": 1, "chunkDigest": D}],
    [{"type": "reg", "name": "x", "size": 10, "offset": 20_000, "digest": D}],
    [{"type": "reg", "name": "x", "size": 10, "digest": D}],
    [{"type": "reg", "name": "x", "size": 10, "offset": 5, "chunkSize": 4}],
    [{"type": "reg", "name": "x", "size": 10, "offset": 5, "chunkDigest": D},
     {"type": "chunk", "name": "x", "offset": 9, "chunkOffset": 12, "chunkDigest": D}],
    [{"type": "reg", "name": "x", "size": -1, "offset": 5, "digest": D}],
    [{"type": "reg", "name": "x", "mode": "0755"}],
    ["not an object"],
], ids=["unknown-type", "orphan-chunk", "data-past-the-toc", "no-offset", "chunked-without-digest",
        "chunk-past-the-end", "negative-size", "string-mode", "not-an-object"])
def test_malformed_tocs_are_unusable(bad: list[object]) -> None:
    with pytest.raises(TocUnusable):
        parse(bad)


def test_too_many_entries_is_the_streams_limit() -> None:
    with pytest.raises(LimitExceeded):
        parse([{"type": "dir", "name": f"d{i}/"} for i in range(101)])


def test_a_blob_end_that_is_not_an_estargz_footer() -> None:
    with pytest.raises(TocUnusable):
        parse_footer(b"\x1f\x8b\x08\x00" + b"\0" * 47, "t")
    with pytest.raises(TocUnusable):
        parse_footer(b"\x1f\x8b\x08\x04" + b"\0" * 6 + b"\x1a\x00SG\x16\x00" + b"zzzzzzzzzzzzzzzzSTARGZ" + b"\0" * 13, "t")
