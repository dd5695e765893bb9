"""A progress bar on stderr for ``canrun check`` and ``canrun audit``, only when a person is watching.

A cluster audit reads hundreds of images; without a sign of life a person
kills it.  A CI log or a pipe must not fill with carriage returns, so nothing
is drawn unless the stream is a terminal.  The line is redrawn only when what
it shows changes, and wiped as soon as the last workload is judged, so the
lines the command writes next (and the report) start on a clean line.
"""

from __future__ import annotations

from typing import TextIO

WIDTH = 28


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


def bar(done: int, total: int, *, width: int = WIDTH, noun: str = "workloads") -> str:
    """``[##########--------------] 12/34 workloads``: what one redraw shows."""
    total = max(total, 1)
    done = min(max(done, 0), total)
    filled = done * width // total
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total} {noun}"


class ProgressBar:
    """Callable as ``progress(done, total)``; the engine calls it once per workload judged."""

    def __init__(self, stream: TextIO, *, noun: str = "workloads", enabled: bool | None = None) -> None:
        self.stream = stream
        self.noun = noun
        self.enabled = is_terminal(stream) if enabled is None else enabled
        self._shown = ""

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 1:
            return
        if done >= total:
            self.close()  # finished: wiped at once, before the command writes anything else on stderr
            return
        line = f"canrun: {bar(done, total, noun=self.noun)}"
        if line != self._shown:
            self.stream.write(f"\r{line}")
            self.stream.flush()
            self._shown = line

    def close(self) -> None:
        """Wipe the bar (if one was drawn) so what follows starts at the left margin."""
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = ""
