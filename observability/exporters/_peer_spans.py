"""Where the exporters meet other tracers: the records other tracers keep of the model run being
exported (their open LLM spans, their own run objects), and the exporters that write onto them.

The exporters know their SDKs, not LangChain. The LangChain layer (``observability.langchain.peers``)
finds a run's peer records once, when the run ends, and sets ``RUN_PEERS`` around the export
call; exporters read it (checking it is their run's) and never call back up. ``connect`` (on import of the
LangChain layer) says how to start watching for peers, and ``add_run_exporter`` adds the exporter
that annotates other tracers' own run records to ``default_exporters``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from uuid import UUID

logger = logging.getLogger("observability")


@dataclass(frozen=True, slots=True)
class PeerRecords:
    """Other tracers' records of one model run, found when it ended.

    ``spans``: the live LLM spans the span peers have open for it (usually none or one), or None
    when a peer of this run no longer looks like the version we know (the span exporter then makes
    its own span). ``runs``: ``(tracer, its run object)`` for tracers that keep runs of their own;
    ``failed``: those of them whose run could not be looked up (logged once; the run exporter counts them).
    """

    run_id: UUID
    spans: list[Any] | None = None
    runs: tuple[tuple[str, Any], ...] = ()
    failed: tuple[str, ...] = ()


RUN_PEERS: ContextVar[PeerRecords | None] = ContextVar("observability_run_peers", default=None)
"""Set by the handler while it exports a model run's records; None outside an export."""

_install: Callable[[], None] = lambda: None  # noqa: E731
_run_exporters: list[Callable[[], Any]] = []
_logged: set[str] = set()
_lock = threading.Lock()


def connect(*, install: Callable[[], None]) -> None:
    """Called once by the LangChain layer: how to start watching for peers."""
    global _install
    _install = install


def add_run_exporter(factory: Callable[[], Any]) -> None:
    """Called once by the LangChain layer: an exporter ``default_exporters`` adds (before the metrics)."""
    if factory not in _run_exporters:
        _run_exporters.append(factory)


def run_exporters() -> list[Any]:
    return [factory() for factory in _run_exporters]


def install() -> None:
    _install()


def log_once(key: str, message: str) -> None:
    """Warn once per process per ``key``; messages name peers and exception types, never content."""
    with _lock:
        if key in _logged:
            return
        _logged.add(key)
    logger.warning(message)
