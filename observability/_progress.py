"""A one-line progress bar for the demo, standard library only.

On a terminal the bar redraws in place (``\\r``) and is cleared before other output is printed, so
printed lines never mix with it. Elsewhere (a pipe, a log file, CI) it prints one plain line per
update instead, which stays readable in a log.
"""

from __future__ import annotations

import shutil
import sys
import threading
from typing import TextIO


class ProgressBar:
    """``[█████·····] 5/10 requests · what is happening``; ``total=None`` shows a count only."""

    def __init__(self, total: int | None, *, unit: str = "requests", width: int = 24,
                 stream: TextIO | None = None) -> None:
        self.total = total
        self.unit = unit
        self.width = width
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.note = ""
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._shown = 0  # characters of the bar currently on screen
        self._lock = threading.Lock()

    def line(self) -> str:
        """The bar as text, without control characters."""
        if self.total:
            filled = min(self.width, round(self.width * self.done / self.total))
            bar = "█" * filled + "·" * (self.width - filled)
            text = f"[{bar}] {self.done}/{self.total} {self.unit}"
        else:
            text = f"{self.done} {self.unit}"
        return f"{text} · {self.note}" if self.note else text

    def update(self, *, done: int | None = None, note: str | None = None) -> None:
        with self._lock:
            if done is not None:
                self.done = done
            if note is not None:
                self.note = note
            if self.interactive:
                self._draw()
            elif note is not None or (self.total is not None and self.done >= self.total):
                # in a log, one line per new task and one at the end are enough
                self.stream.write(f"progress: {self.line()}\n")
                self.stream.flush()

    def clear(self) -> None:
        """Remove the bar from the terminal (before printing something else)."""
        with self._lock:
            if self.interactive and self._shown:
                self.stream.write("\r" + " " * self._shown + "\r")
                self.stream.flush()
                self._shown = 0

    def redraw(self) -> None:
        with self._lock:
            if self.interactive:
                self._draw()

    def _draw(self) -> None:
        text = self.line()[: max(10, shutil.get_terminal_size().columns - 1)]  # a wrapped line cannot be redrawn
        pad = max(0, self._shown - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._shown = len(text)
