"""Where the exporters meet other tracers: a peer's open span for a model run, and the exporters
that put the figures on other tracers' own run records.

The exporters know their SDKs, not LangChain: the LangChain layer (``observability.langchain.peers``
and ``.tracer_runs``) connects the functions here when it is imported, and until then there is no
peer. ``find(run_id)`` returns the peers' live spans of that run (a list,
empty when none), or anything else for a peer whose internals we no longer know (the exporter then
makes its own span).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID

logger = logging.getLogger("observability")

_install: Callable[[], None] = lambda: None  # noqa: E731
_find: Callable[[UUID], Any] = lambda run_id: []  # noqa: E731
_run_exporters: list[Callable[[], Any]] = []
_logged: set[str] = set()
_lock = threading.Lock()


def connect(*, find: Callable[[UUID], Any], install: Callable[[], None]) -> None:
    """Called once by the LangChain layer: how to find peer spans, and how to start looking."""
    global _find, _install
    _find, _install = find, install


def add_run_exporter(factory: Callable[[], Any]) -> None:
    """Called once by the LangChain layer: an exporter ``default_exporters`` adds (before the metrics)."""
    if factory not in _run_exporters:
        _run_exporters.append(factory)


def run_exporters() -> list[Any]:
    return [factory() for factory in _run_exporters]


def install() -> None:
    _install()


def find(run_id: UUID) -> Any:
    return _find(run_id)


def log_once(key: str, message: str) -> None:
    """Warn once per process per ``key``; messages name peers and exception types, never content."""
    with _lock:
        if key in _logged:
            return
        _logged.add(key)
    logger.warning(message)
