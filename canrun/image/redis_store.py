"""A ``BlobStore`` in Redis, shared by every replica, CI run and audit pointed at the same URL.

The cache's second tier (``Cache(shared=...)``): the local disk is read first,
then Redis, and a verified Redis hit is copied to disk.  Redis is only ever an
optimisation, so every call is bounded and every failure is a miss:

* connect and read timeouts are short (``timeout``, 100 ms by default) and
  redis-py's own retries are off: a slow Redis costs one timeout, not three;
* after ``BREAKER_FAILURES`` failures in a row the store stops calling Redis
  for ``BREAKER_SECONDS`` (a circuit breaker), then lets one call through to
  see whether it is back; while open, reads are misses at once;
* writes never wait on Redis: they are queued (bounded in entries and bytes,
  the excess dropped and counted) for one writer thread; ``close`` drains the
  queue within a bound, so a one-shot ``canrun check`` leaves its work behind;
* every value is size-bounded (``max_value_bytes``; a larger one is refused
  and counted) and every SET carries an expiry: content-addressed records
  ``content_ttl``, tag resolutions ``tag_ttl``.

``stats`` counts hits, misses, errors, timeouts, skips (breaker open),
refused and dropped writes for the webhook's metrics; the password is never
part of any message (``redact.remember`` and ``safe_url``).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from canrun import redact
from canrun.errors import UsageError

DEFAULT_TIMEOUT = 0.1
DEFAULT_CONTENT_TTL = 7 * 24 * 3600
DEFAULT_MAX_VALUE_BYTES = 32 << 20
BREAKER_FAILURES = 3
BREAKER_SECONDS = 10.0
#: Writes waiting for the writer thread: at most this many, and this many bytes.
QUEUE_ENTRIES = 512
QUEUE_BYTES = 256 << 20
#: Every key is under this prefix (a shared Redis may hold other things); the number is the key layout's version.
KEY_PREFIX = "canrun:1:"
SCHEMES = ("redis", "rediss")


@dataclass(frozen=True)
class RedisURL:
    """A parsed ``redis://[user[:password]@]host[:port][/db]`` (or ``rediss://``) without its password in ``str``."""

    scheme: str
    host: str
    port: int
    db: int
    username: str | None
    password: str | None

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    def __str__(self) -> str:
        return safe_url(self)


def parse_url(text: str, *, password: str | None = None) -> RedisURL:
    """Parse a cache URL; ``password`` (from a file or the environment) is used when the URL has none."""
    raw = str(text).strip()
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"--cache-url: not a redis:// URL ({_mask(raw)}): {exc}") from None
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise UsageError(f"--cache-url: expected redis://HOST[:PORT][/DB] or rediss://…, got {_mask(raw)!r}")
    if parts.query or parts.fragment:
        raise UsageError(f"--cache-url: no query or fragment is understood, got {_mask(raw)!r}")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise UsageError(f"--cache-url: the path is the database number, got {path!r}")
    url_password = unquote(parts.password) if parts.password else None
    redact.remember(url_password, password)
    return RedisURL(scheme=parts.scheme, host=parts.hostname, port=port or 6379, db=int(path or 0),
                    username=unquote(parts.username) if parts.username else None,
                    password=url_password or password or None)


def read_password(file: Path | None) -> str | None:
    """The Redis password in a mounted Secret file (surrounding whitespace stripped), or None without a file."""
    if file is None:
        return None
    try:
        secret = file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--cache-password-file: cannot read {file}: {exc.__class__.__name__}") from None
    redact.remember(secret)
    return secret or None


def safe_url(url: RedisURL) -> str:
    auth = ""
    if url.username or url.password:
        auth = (url.username or "") + (":" + redact.MASK if url.password else "") + "@"
    return f"{url.scheme}://{auth}{url.host}:{url.port}/{url.db}"


def _mask(raw: str) -> str:
    """A URL as the user wrote it, its password (if any) masked, for an error message."""
    try:
        parts = urlsplit(raw)
        if parts.password:
            redact.remember(unquote(parts.password))
            return raw.replace(parts.password, redact.MASK)
    except ValueError:
        pass
    return redact.redact(raw)


class _Breaker:
    """Open after ``failures`` failures in a row; half-open (one call through) after ``seconds``."""

    def __init__(self, failures: int, seconds: float) -> None:
        self.failures = failures
        self.seconds = seconds
        self._count = 0
        self._open_until = 0.0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            if self._count < self.failures:
                return True
            now = time.monotonic()
            if now >= self._open_until:
                self._open_until = now + self.seconds  # this caller probes; the others wait for its outcome
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self._count = 0

    def failure(self) -> None:
        with self._lock:
            self._count += 1
            if self._count >= self.failures:
                self._open_until = time.monotonic() + self.seconds

    @property
    def open(self) -> bool:
        with self._lock:
            return self._count >= self.failures and time.monotonic() < self._open_until


class RedisStore:
    """``BlobStore`` over Redis (see the module docstring): bounded, expiring, never in the caller's way."""

    def __init__(self, url: RedisURL, *, timeout: float = DEFAULT_TIMEOUT, tag_ttl: float = 300.0,
                 content_ttl: int = DEFAULT_CONTENT_TTL, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
                 ca_file: Path | None = None) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._redis_errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._timeout_errors: tuple[type[BaseException], ...] = (redis.TimeoutError, TimeoutError)
        self.url = url
        self.tag_ttl = max(1, int(tag_ttl))
        self.content_ttl = content_ttl
        self.max_value_bytes = max_value_bytes
        kwargs: dict[str, object] = {}
        if url.tls:
            kwargs.update(ssl=True, ssl_ca_certs=str(ca_file) if ca_file else None)
        def client(read_timeout: float, connections: int) -> redis.Redis:
            return redis.Redis(
                host=url.host, port=url.port, db=url.db, username=url.username, password=url.password,
                socket_timeout=read_timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0),
                health_check_interval=0, max_connections=connections, **kwargs)

        self._client = client(timeout, 32)
        #: The writer's own connection: nobody waits on it, so a large SET over a slow link may take longer.
        self._writer_client = client(max(1.0, 10 * timeout), 1)
        self.breaker = _Breaker(BREAKER_FAILURES, BREAKER_SECONDS)
        self.stats: dict[str, int] = dict.fromkeys(
            ("hits", "misses", "errors", "timeouts", "skipped", "writes", "refused", "dropped"), 0)
        self._stats_lock = threading.Lock()
        self._queue: queue.Queue[tuple[str, str, bytes | None] | None] = queue.Queue(QUEUE_ENTRIES)
        self._queued_bytes = 0
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisStore({safe_url(self.url)})"

    # ------------------------------------------------------------------ BlobStore
    def read(self, key: str, *, touch: bool = True) -> bytes | None:
        if not self.breaker.allow():
            self._count("skipped")
            return None
        try:
            data = self._client.get(KEY_PREFIX + key)
        except self._redis_errors as exc:
            self._failed(exc)
            return None
        self.breaker.success()
        if not isinstance(data, bytes) or len(data) > self.max_value_bytes:
            self._count("misses")
            return None
        self._count("hits")
        return data

    def write(self, key: str, data: bytes) -> None:
        if len(data) > self.max_value_bytes:
            self._count("refused")
            return
        self._enqueue(("set", key, data), len(data))

    def discard(self, key: str) -> None:
        self._enqueue(("del", key, None), 0)

    def prune(self, max_bytes: int | None = None) -> int:
        """Nothing to do: Redis expires every entry, and its ``maxmemory`` policy evicts."""
        return 0

    # ------------------------------------------------------------------ lifecycle
    def flush(self, timeout: float = 5.0) -> bool:
        """Wait (at most ``timeout``) until every queued write was sent or given up; True if the queue is empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.005)
        return self._queue.unfinished_tasks == 0

    def close(self, timeout: float = 2.0) -> None:
        """Drain the queue within ``timeout``, stop the writer, close the connections."""
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        writer = self._writer
        if writer is not None:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
            writer.join(timeout=max(0.1, timeout))
        for client in (self._client, self._writer_client):
            try:
                client.close()
            except self._redis_errors:
                pass

    # ------------------------------------------------------------------ internals
    def _count(self, event: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[event] += n

    def _failed(self, exc: BaseException) -> None:
        self._count("timeouts" if isinstance(exc, self._timeout_errors) else "errors")
        self.breaker.failure()

    def _enqueue(self, item: tuple[str, str, bytes | None], size: int) -> None:
        if self._closed or self.breaker.open:
            self._count("dropped")
            return
        with self._writer_lock:
            if self._queued_bytes + size > QUEUE_BYTES:
                self._count("dropped")
                return
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self._count("dropped")
                return
            self._queued_bytes += size
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="canrun-redis-writer", daemon=True)
                self._writer.start()

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                op, key, data = item
                with self._writer_lock:
                    self._queued_bytes -= len(data) if data is not None else 0
                if not self.breaker.allow():
                    self._count("dropped")
                    continue
                try:
                    if op == "set":
                        ttl = self.tag_ttl if key.startswith("tags/") else self.content_ttl
                        self._writer_client.set(KEY_PREFIX + key, data, ex=ttl)  # type: ignore[arg-type]
                        self._count("writes")
                    else:
                        self._writer_client.delete(KEY_PREFIX + key)
                except self._redis_errors as exc:
                    self._failed(exc)
                    continue
                self.breaker.success()
            finally:
                self._queue.task_done()


__all__ = ["DEFAULT_TIMEOUT", "KEY_PREFIX", "RedisStore", "RedisURL", "parse_url", "read_password", "safe_url"]
