"""The progress bar: drawn on a terminal, silent in a pipe or a CI log, wiped before the report."""

from __future__ import annotations

import io
from pathlib import Path

from canrun import cli
from canrun.output.progress import ProgressBar, bar


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_fills_in_proportion() -> None:
    assert bar(0, 4, width=8) == "[--------] 0/4 workloads"
    assert bar(1, 4, width=8) == "[##------] 1/4 workloads"
    assert bar(4, 4, width=8) == "[########] 4/4 workloads"
    assert bar(9, 4, width=8) == "[########] 4/4 workloads"  # never past full


def test_drawn_on_a_terminal_and_wiped_at_the_end() -> None:
    stream = Tty()
    progress = ProgressBar(stream)
    progress(1, 3)
    progress(1, 3)  # nothing new to show: no redraw
    progress(2, 3)
    assert stream.getvalue().count("\r") == 2 and stream.getvalue().endswith("] 2/3 workloads")
    progress(3, 3)  # done: wiped at once
    assert stream.getvalue().endswith("\r\033[K")
    progress.close()  # nothing left to wipe
    out = stream.getvalue()
    assert out.count("\r") == 3 and out.count("\033[K") == 1
    assert "canrun: [" in out and "1/3 workloads" in out


def test_silent_in_a_pipe_and_for_a_single_workload() -> None:
    stream = io.StringIO()
    progress = ProgressBar(stream)
    progress(1, 2)
    progress.close()
    assert stream.getvalue() == ""
    tty = Tty()
    one = ProgressBar(tty)
    one(1, 1)
    one.close()
    assert tty.getvalue() == ""  # nothing was drawn, so nothing is wiped either


def test_check_draws_the_bar_on_a_terminal_only(repo: Path) -> None:
    err = Tty()
    assert cli.main(["check", "--no-cache", "-f", "k8s"], stdout=io.StringIO(), stderr=err) == 0
    assert "/3 workloads" in err.getvalue() and err.getvalue().endswith("\r\033[K")
    err2 = io.StringIO()
    cli.main(["check", "--no-cache", "-f", "k8s"], stdout=io.StringIO(), stderr=err2)
    assert "\r" not in err2.getvalue()
