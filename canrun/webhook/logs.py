"""Structured JSON logs for the webhook: one object per line, stdlib logging only.

Log shippers in a cluster parse one JSON object per line; a decision record
carries its fields under ``extra={"fields": {...}}`` and they become top-level
keys.  Nothing here ever receives credentials: callers pass ids, names and rule
ids only.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

_STD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "msg", ...fields}`` on one line.

    It runs once per admission on the webhook's hot path, so the timestamp text is
    reused within a second and only the record's non-standard attributes are visited.
    """

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # racing threads at worst both recompute the same text
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        data: dict[str, Any] = {
            "time": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        attrs = vars(record)
        fields = attrs.get("fields")
        if isinstance(fields, dict):
            data.update(fields)
        for key in attrs.keys() - _STD:
            if key not in ("fields", "color_message") and not key.startswith("_"):
                data.setdefault(key, attrs[key])
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(data, default=str, separators=(",", ":"))


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Send canrun's and uvicorn's logs to ``stream`` as JSON lines (idempotent)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("canrun", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    # one line per admission comes from canrun itself; uvicorn's access log would double it
    logging.getLogger("uvicorn.access").disabled = True
