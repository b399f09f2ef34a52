"""A one-line progress bar for the demo, standard library only.

On a terminal the bar redraws in place (``\\r``) and is cleared before other output is printed, so
printed lines never mix with it; while ``ticking()``, it is redrawn twice a second with the seconds
spent on the current task, so a slow step never looks like a hang. Elsewhere (a pipe, a log file,
CI) it prints one plain line per update instead, which stays readable in a log.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
        self._note_since = time.monotonic()
        self._ticking = False
        self._hidden = False  # cleared: stays off screen until the next update

    def line(self) -> str:
        """The bar as text, without control characters."""
        if self.total:
            filled = min(self.width, round(self.width * self.done / self.total))
            bar = "█" * filled + "·" * (self.width - filled)
            text = f"[{bar}] {self.done}/{self.total} {self.unit}"
        else:
            text = f"{self.done} {self.unit}" if self.unit else ""
        if self.note:
            text = f"{text} · {self.note}" if text else self.note
            if self._ticking:
                text += f" · {time.monotonic() - self._note_since:.0f} s"
        return text

    def update(self, *, done: int | None = None, note: str | None = None) -> None:
        with self._lock:
            if done is not None:
                self.done = done
            if note is not None:
                self.note = note
                self._note_since = time.monotonic()
            self._hidden = False
            if self.interactive:
                self._draw()
            elif note is not None or (self.total is not None and self.done >= self.total):
                # in a log, one line per new task and one at the end are enough
                self.stream.write(f"progress: {self.line()}\n")
                self.stream.flush()

    def clear(self) -> None:
        """Remove the bar from the terminal (before printing something else)."""
        with self._lock:
            self._hidden = True
            if self.interactive and self._shown:
                self.stream.write("\r" + " " * self._shown + "\r")
                self.stream.flush()
                self._shown = 0

    def redraw(self) -> None:
        with self._lock:
            if self.interactive and not self._hidden:
                self._draw()

    @contextmanager
    def ticking(self, interval: float = 0.5) -> Iterator[ProgressBar]:
        """Within the block, a terminal shows the seconds spent on the current note, redrawn every
        ``interval`` seconds by a daemon thread (nothing changes in a log)."""
        if not self.interactive:
            yield self
            return
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(interval):
                self.redraw()

        self._ticking = True
        thread = threading.Thread(target=tick, name="progress-ticker", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self._ticking = False

    def _draw(self) -> None:
        text = self.line()[: max(10, shutil.get_terminal_size().columns - 1)]  # a wrapped line cannot be redrawn
        pad = max(0, self._shown - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._shown = len(text)
