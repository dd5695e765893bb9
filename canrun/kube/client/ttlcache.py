"""A small thread-safe cache whose entries expire (namespace labels, pull keychains)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class TTLCache:
    """Entries expire after ``ttl`` seconds; bounded so a busy webhook cannot grow it forever."""

    def __init__(self, ttl: float, clock: Callable[[], float], max_entries: int = 1024) -> None:
        self.ttl, self.clock, self.max_entries = ttl, clock, max_entries
        self._data: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any) -> tuple[bool, Any]:
        with self._lock:
            hit = self._data.get(key)
            if hit is None or hit[0] <= self.clock():
                self._data.pop(key, None)
                return False, None
            return True, hit[1]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            if len(self._data) >= self.max_entries:
                now = self.clock()
                for k in [k for k, (exp, _) in self._data.items() if exp <= now]:
                    del self._data[k]
                while len(self._data) >= self.max_entries:
                    del self._data[next(iter(self._data))]
            self._data[key] = (self.clock() + self.ttl, value)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
