"""The demo's progress bar: redrawn in place on a terminal, plain lines in a log."""

from __future__ import annotations

import io

from observability.demo.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_fills_in_proportion() -> None:
    bar = ProgressBar(8, width=8, stream=io.StringIO())
    bar.done, bar.note = 3, "a batch"
    assert bar.line() == "[███·····] 3/8 requests · a batch"
    bar.done = 8
    bar.note = ""
    assert bar.line() == "[████████] 8/8 requests"
    assert ProgressBar(None, stream=io.StringIO()).line() == "0 requests"


def test_on_a_terminal_the_bar_is_redrawn_and_cleared() -> None:
    screen = Terminal()
    bar = ProgressBar(4, width=4, stream=screen)
    bar.update(done=1, note="long note here")
    bar.update(done=2, note="short")
    bar.clear()
    written = screen.getvalue()
    assert "\n" not in written  # never scrolls
    assert written.startswith("\r[█···] 1/4 requests · long note here")
    # the shorter line is padded over the rest of the longer one; clearing blanks what is left
    assert "\r[██··] 2/4 requests · short" + " " * 9 + "\r" in written
    assert written.endswith("\r" + " " * len("[██··] 2/4 requests · short") + "\r")


def test_in_a_log_one_line_per_task_and_one_at_the_end() -> None:
    log = io.StringIO()
    bar = ProgressBar(2, width=2, stream=log)
    bar.update(done=0, note="first")
    bar.update(done=1)  # progress within a task: not logged
    bar.update(done=1, note="second")
    bar.update(done=2)
    assert log.getvalue().splitlines() == [
        "progress: [··] 0/2 requests · first",
        "progress: [█·] 1/2 requests · second",
        "progress: [██] 2/2 requests · second",
    ]
