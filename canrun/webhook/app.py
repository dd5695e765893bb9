"""The HTTP face of the webhook: FastAPI routes over an ``AdmissionService``.

The app only moves bytes: the raw body goes to the service (no pydantic model
re-validating what the service parses anyway, which keeps the hot path short),
``BadAdmissionReview`` becomes HTTP 400 with a one-line message, and nothing
ever becomes a 500 with a traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from canrun import __version__
from canrun.kube.admission import BadAdmissionReview
from canrun.webhook.metrics import CONTENT_TYPE
from canrun.webhook.service import AdmissionService

log = logging.getLogger("canrun.webhook")

#: AdmissionReviews are small; a bigger body is not one (the API server caps objects at ~3 MiB).
MAX_BODY = 8 * 1024 * 1024


def _json(data: object, status: int = 200) -> Response:
    return Response(json.dumps(data, separators=(",", ":")).encode(), status_code=status,
                    media_type="application/json")


def create_app(service: AdmissionService) -> FastAPI:
    """An app serving ``POST /validate``, ``/healthz``, ``/readyz`` and ``/metrics`` for ``service``."""

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

    @app.post("/validate")
    async def validate(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            service.metrics.bad_requests.inc()
            return _json({"error": f"body of {len(body)} bytes is larger than {MAX_BODY}"}, 413)
        try:
            answer = await service.review(body)
        except BadAdmissionReview as exc:
            return _json({"error": str(exc)}, 400)
        return _json(answer)

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
