"""What a hostile or broken HTTP client can do to the webhook: nothing but get a clear answer.

Real uvicorn over real TLS on loopback (``tests/support/webhook.py``); the clients are httpx and raw TLS
sockets.  Memory is measured on this very process (the server runs in a thread of it): the peak RSS is
reset through ``/proc/self/clear_refs`` before the bodies are sent and read back after.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from canrun.webhook.app import MAX_BODY
from tests.webhook.conftest import StartWebhook

MIB = 1 << 20


def _peak_rss_mb() -> float:
    status = open("/proc/self/status").read()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _rss_mb() -> float:
    status = open("/proc/self/status").read()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def test_deeply_nested_json_is_a_bad_request(start_webhook: StartWebhook) -> None:
    hook = start_webhook()
    depth = 100_000
    body = ('{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","object":'
            + "[" * depth + "]" * depth + "}}").encode()
    resp = hook.client.post("/validate", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert "nests deeper" in resp.json()["error"]
    nested_objects = ('{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1",'
                      + '"object":{"a":' * depth + "1" + "}" * depth + "}}").encode()
    resp = hook.client.post("/validate", content=nested_objects, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert hook.client.get("/healthz").status_code == 200


def _chunks(total: int, piece: bytes) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield piece
        sent += len(piece)


def test_oversized_bodies_are_refused_while_streaming(start_webhook: StartWebhook) -> None:
    """Eight clients each sending 60 MB at once: the server stops reading each at the limit."""
    hook = start_webhook()
    piece = b" " * MIB
    size = 60 * MIB
    statuses: list[object] = []
    lock = threading.Lock()

    def send(declare_length: bool) -> None:
        headers = {"content-type": "application/json"}
        if declare_length:
            headers["content-length"] = str(size)
        trust = ssl.create_default_context(cafile=str(hook.tls.ca_file))
        with httpx.Client(base_url=hook.client.base_url, verify=trust, timeout=60) as client:
            try:
                result: object = client.post("/validate", content=_chunks(size, piece), headers=headers).status_code
            except httpx.HTTPError as exc:  # the server closed the connection while we were still sending
                result = type(exc).__name__
        with lock:
            statuses.append(result)

    before = _rss_mb()
    _reset_peak_rss()
    threads = [threading.Thread(target=send, args=(i % 2 == 0,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    grown = _peak_rss_mb() - before
    assert len(statuses) == 8
    assert all(s == 413 or isinstance(s, str) for s in statuses), statuses
    assert statuses.count(413) >= 1, statuses
    # eight bodies read whole would be 8 × 60 MB (and a copy each); read up to the limit, at most 8 × 8 MiB
    assert grown < 8 * MAX_BODY / MIB + 40, f"peak RSS grew by {grown:.0f} MB"
    just_over = b" " * (MAX_BODY + 1)
    resp = hook.client.post("/validate", content=iter([just_over]), headers={"content-type": "application/json"})
    assert resp.status_code == 413 and "larger than" in resp.json()["error"]
    assert hook.client.get("/healthz").status_code == 200


def test_a_client_that_goes_away_mid_body_is_an_info_line(start_webhook: StartWebhook,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A slowloris over TLS: headers promising a body, a few bytes of it, then the client hangs up."""
    hook = start_webhook()
    caplog.set_level(logging.INFO)
    url = httpx.URL(str(hook.client.base_url))
    context = ssl.create_default_context(cafile=str(hook.tls.ca_file))
    for _ in range(5):
        raw = socket.create_connection((url.host, url.port), timeout=10)
        with context.wrap_socket(raw, server_hostname=url.host) as tls:
            tls.sendall(b"POST /validate HTTP/1.1\r\nHost: canrun\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100000\r\n\r\n")
            for byte in b'{"apiVersion":':
                tls.sendall(bytes([byte]))
                time.sleep(0.01)
    deadline = time.monotonic() + 10
    while sum("went away" in r.getMessage() for r in caplog.records) < 5:
        assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
        time.sleep(0.05)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]
    went = [r for r in caplog.records if "went away" in r.getMessage()]
    assert all(r.levelno == logging.INFO for r in went)
    assert hook.client.get("/healthz").status_code == 200
    assert json.loads(hook.client.post("/validate", content=b"{}").text)["error"]
