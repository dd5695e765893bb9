"""The webhook's settings follow its settings file: a changed ConfigMap applies without a restart.

A ConfigMap mounted as a volume is updated by the kubelet in place (a
``..data`` symlink swapped in one rename, within about a minute of the edit), as
a Secret is for the serving certificate (``server.ReloadingTLS``).  The file is
re-read every ``interval`` seconds; when its bytes change, the settings are
composed again (flags, then the new file, then the environment) and a new engine
(registry client, store, validator) is opened from them.  The admission service
is then switched to the new validator (its remembered verdicts dropped, since
they were made under the old policy) and the old engine is closed once the
judgements it started had time to finish.  A file that does not parse or
validate changes nothing: the error is logged and the running settings stay.

The on-disk cache is shared by both engines (it is keyed by digest only), so a
reload costs no image reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from canrun.config import Engine, Settings, open_engine
from canrun.errors import CanrunError

log = logging.getLogger("canrun.webhook")


class EngineHolder:
    """The engine the webhook judges with now, replaced as the settings file changes."""

    def __init__(self, settings: Settings, *, extra_blocked: tuple[str, ...] = (),
                 recompose: Callable[[], Settings] | None = None, interval: float = 10.0,
                 grace: float = 60.0) -> None:
        self.settings = settings
        self.extra_blocked = extra_blocked
        self.recompose = recompose
        self.interval = interval
        #: Seconds an old engine stays open for the judgements it started (the deadline is far shorter).
        self.grace = grace
        self.reloads = 0
        self._context: AbstractAsyncContextManager[Engine] | None = None
        self.engine: Engine | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._listeners: list[Callable[[Engine], None]] = []
        self._stamp = self._read()

    def _read(self) -> str | None:
        path = self.settings.config_file
        if path is None:
            return None
        try:
            return hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError:
            return None  # mid-update or removed: keep what runs, look again next time

    async def __aenter__(self) -> EngineHolder:
        self._context, self.engine = await self._open(self.settings)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        if self._context is not None:
            await self._context.__aexit__(None, None, None)

    async def _open(self, settings: Settings) -> tuple[AbstractAsyncContextManager[Engine], Engine]:
        context = open_engine(settings, extra_blocked=self.extra_blocked)
        return context, await context.__aenter__()

    @property
    def current(self) -> Engine:
        assert self.engine is not None, "EngineHolder used outside its async with"
        return self.engine

    def on_change(self, listener: Callable[[Engine], None]) -> None:
        """Call ``listener`` with each new engine (the admission service switches its validator)."""
        self._listeners.append(listener)

    async def check(self) -> bool:
        """Apply the settings file if it changed since the last look; True when a new engine is in use."""
        stamp = self._read()
        if self.recompose is None or stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            settings = self.recompose()
            context, engine = await self._open(settings)
        except CanrunError as exc:
            log.error("settings file %s not applied: %s; the running settings stay", self.settings.config_file,
                      exc)
            return False
        old = self._context
        self.settings, self._context, self.engine = settings, context, engine
        for listener in self._listeners:
            listener(engine)
        if old is not None:
            task = asyncio.create_task(self._retire(old))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        self.reloads += 1
        log.info("settings reloaded from %s", settings.config_file)
        return True

    async def _retire(self, context: AbstractAsyncContextManager[Engine]) -> None:
        try:
            await asyncio.sleep(self.grace)
        finally:
            await context.__aexit__(None, None, None)

    async def watch(self) -> None:
        """Look at the settings file every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # never let a reload take the webhook down
                log.exception("settings reload failed; the running settings stay")
