"""The HTTP face of the webhook: FastAPI routes over an ``AdmissionService``.

The app only moves bytes: the raw body goes to the service (no pydantic model
re-validating what the service parses anyway, which keeps the hot path short),
``BadAdmissionReview`` becomes HTTP 400 with a one-line message, and nothing
ever becomes a 500 with a traceback.

The body is read as it streams in and reading stops at ``MAX_BODY``: a client
announcing or sending more is answered 413 and its connection closed, so eight
clients each sending 60 MB cost at most eight times the limit, not eight times
their bodies.  A client that goes away mid-body is an info line, not an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.requests import ClientDisconnect

from canrun import __version__
from canrun.kube.admission import BadAdmissionReview
from canrun.webhook.metrics import CONTENT_TYPE
from canrun.webhook.service import AdmissionService

log = logging.getLogger("canrun.webhook")

#: AdmissionReviews are small; a bigger body is not one (the API server caps objects at ~3 MiB).
MAX_BODY = 8 * 1024 * 1024


def _json(data: object, status: int = 200, *, close: bool = False) -> Response:
    return Response(json.dumps(data, separators=(",", ":")).encode(), status_code=status,
                    media_type="application/json", headers={"Connection": "close"} if close else None)


class _TooLarge(Exception):
    """The body passed ``MAX_BODY`` (or announced it would)."""


async def _read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request body, read chunk by chunk and refused as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge(f"a body of {declared} bytes is larger than {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge(f"the body is larger than {limit} bytes")
    return bytes(body)


def create_app(service: AdmissionService) -> FastAPI:
    """An app serving ``POST /validate`` and ``/mutate``, ``/healthz``, ``/readyz`` and ``/metrics`` for ``service``."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.aclose()

    app = FastAPI(title="canrun admission webhook", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    async def answer(request: Request, *, mutate: bool) -> Response:
        try:
            body = await _read_body(request)
        except _TooLarge as exc:
            service.metrics.bad_requests.inc()
            return _json({"error": str(exc)}, 413, close=True)  # close: the rest of the body is not read
        except ClientDisconnect:
            client = request.client
            log.info("client %s went away before its request body was complete",
                     f"{client.host}:{client.port}" if client else "-")
            return Response(status_code=400)  # nobody reads it: the connection is gone
        try:
            answer = await service.review(body, mutate=mutate)
        except BadAdmissionReview as exc:
            return _json({"error": str(exc)}, 400)
        return _json(answer)

    @app.post("/validate")
    async def validate(request: Request) -> Response:
        return await answer(request, mutate=False)

    @app.post("/mutate")
    async def mutate(request: Request) -> Response:
        """Pin mode's node affinity patch (``canrun.io/mode=pin``); every other mode: allowed, no patch."""
        return await answer(request, mutate=True)

    @app.get("/healthz")
    async def healthz() -> Response:
        return PlainTextResponse("ok")

    @app.get("/readyz")
    async def readyz() -> Response:
        if service.ready:
            return PlainTextResponse("ok")
        return PlainTextResponse("node platforms not known yet", status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> Response:
        log.error("unexpected %s: %s", type(exc).__name__, exc)
        return JSONResponse({"error": f"internal error ({type(exc).__name__})"}, status_code=500)

    return app
