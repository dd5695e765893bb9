"""The webhook keeps answering while an image that is expensive to judge is being judged.

The image: 40 symlinks whose targets are long runs of ``./`` chaining into each
other (``s0 -> ././…/s1``, …, ``s39 -> ././…/bin``), an ENTRYPOINT naming a bare
command that is nowhere, and an image ``PATH`` of 1,500 entries each going
through the whole chain.  Judging it means walking every PATH entry through 40
long symlinks.  However long that walk takes, the webhook must answer
``/healthz`` (the liveness probe) and every admission within its deadline (fail
open with a warning) meanwhile: judging never runs on the event loop.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.robustness.conftest import pod_review
from tests.robustness.hostile import (LAYER_GZIP, Pusher, config, directory, gz, header, member, pax_record,
                                      symlink, tar)

pytestmark = [pytest.mark.registry, pytest.mark.timeout(240)]

LINKS = 40
DOTS = 400  # "./" repeated: each hop is DOTS path components
PATH_ENTRIES = 1500


def _pax_symlink(name: str, target: str) -> bytes:
    """A symlink whose target is longer than ustar's 100 bytes: a PAX ``linkpath`` record, then the member."""
    record = pax_record("linkpath", target.encode())
    pad = (-len(record)) % 512
    return header("PaxHeader", type=b"x", size=len(record)) + record + bytes(pad) + symlink(name, "")


def expensive_image(pusher: Pusher) -> str:
    run = "./" * DOTS
    links = [_pax_symlink(f"s{i}", f"{run}s{i + 1}") for i in range(LINKS - 1)]
    links.append(_pax_symlink(f"s{LINKS - 1}", f"{run}bin"))
    layer = gz(tar(directory("bin"), member("bin/sh", b"\x7fELF", mode=0o755), *links))
    path = ":".join(f"/s0/d{i}" for i in range(PATH_ENTRIES))
    cfg = json.loads(config(["not-there"]))
    cfg["config"]["Env"] = [f"PATH={path}"]
    return pusher.image("expensive/walk", "v1", [(LAYER_GZIP, layer)], json.dumps(cfg).encode())


def test_healthz_and_the_deadline_hold_while_an_expensive_image_is_judged(local_registry: Any,
                                                                           webhook_factory: Any) -> None:
    pusher = Pusher(local_registry.host)
    try:
        ref = expensive_image(pusher)
    finally:
        pusher.close()
    hook = webhook_factory(registries=(local_registry.host,), deadline=5.0, mode="enforce")
    probes: list[tuple[int, float]] = []
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        admission = pool.submit(hook.post, pod_review(ref, name="expensive"))
        while not admission.done() or time.monotonic() - started < 8:
            t0 = time.monotonic()
            try:
                status = hook.client.get("/healthz", timeout=3).status_code
            except httpx.HTTPError:
                status = 0
            probes.append((status, time.monotonic() - t0))
            time.sleep(0.25)
            assert time.monotonic() - started < 60, "the admission never came back"
        resp, elapsed = admission.result()
    assert resp.status_code == 200, resp.text
    answer = resp.json()["response"]
    assert elapsed < 5.0 + 1.5, f"answered after {elapsed:.1f}s (deadline 5s)"
    slow = [round(seconds, 2) for status, seconds in probes if status != 200 or seconds > 1.0]
    assert not slow, f"/healthz was slow or failing while the image was judged: {slow} of {len(probes)}"
    if answer["allowed"] and "not verified within 5s" in " ".join(answer.get("warnings") or []):
        # the judgement goes on in the background; a second admission meanwhile also gets its answer in time
        t0 = time.monotonic()
        again, _ = hook.post(pod_review(ref, name=f"again-{uuid.uuid4().hex[:6]}"))
        assert again.status_code == 200 and time.monotonic() - t0 < 5.0 + 1.5
    hook.drain(timeout=120)
