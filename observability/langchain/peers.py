"""Peer tracers: the LLM span OpenInference or OpenLLMetry already makes for a LangChain model run.

Two parts, both process-wide and both guarded:

- **Order.** Both peers add their handler when a callback manager is built, before the handlers
  that LangChain's ``configure()`` adds later (our hooks), and end their span inside their own
  ``on_llm_end``. So that our confidence is on their span before it ends, every model run's
  manager (``CallbackManagerForLLMRun`` / ``AsyncCallbackManagerForLLMRun``) gets the known peer
  handlers that come before ours moved to just behind our last one (nothing else moves): end and
  error events then reach us before the peer, whichever way each handler was attached. This is an
  ``__init__`` added to those two classes (neither defines one; the peers wrap
  ``BaseCallbackManager.__init__``, which run managers do not inherit), removed by ``uninstall``.
- **Lookup.** The same ``__init__`` remembers the peer handlers it sees; when the run ends, the
  handler calls ``find_records(run_id)`` once, before any exporter runs: it asks each span peer for
  its live span of that run through the peer's own run-to-span map (OpenInference:
  ``OpenInferenceTracer.get_span``; OpenLLMetry: ``TraceloopCallbackHandler.spans[run_id].span``;
  OpenTelemetry's official instrumentation: ``OpenTelemetryLangChainCallbackHandler.
  _invocation_manager.get_invocation(run_id).span``), and LangSmith and Langfuse for their run
  object. The exporters get the answer through ``observability.exporters._peer_spans.RUN_PEERS``.

A peer whose internals no longer look as expected (a class, method or map renamed) is logged
once, by peer name, and the run's ``spans`` are None: the exporter then makes its own span, as if
there were no peer. Measured with openinference-instrumentation-langchain 0.1.80,
opentelemetry-instrumentation-langchain 0.62.4 and opentelemetry-instrumentation-genai-langchain
1.3b0 (docs/peer-tracers.md).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

from observability.exporters import _peer_spans
from observability.exporters._peer_spans import PeerRecords

logger = logging.getLogger("observability")

OPENINFERENCE = "openinference"
OPENLLMETRY = "openllmetry"
OTEL_GENAI = "opentelemetry-genai"
LANGSMITH = "langsmith"
LANGFUSE = "langfuse"
MLFLOW = "mlflow"
_PEER_MODULES = {  # module prefix → (peer, handler class name)
    "openinference.instrumentation.langchain": (OPENINFERENCE, "OpenInferenceTracer"),
    "opentelemetry.instrumentation.langchain": (OPENLLMETRY, "TraceloopCallbackHandler"),
    "opentelemetry.instrumentation.genai.langchain": (OTEL_GENAI, "OpenTelemetryLangChainCallbackHandler"),
    "langchain_core.tracers.langchain": (LANGSMITH, "LangChainTracer"),
    "langfuse.langchain": (LANGFUSE, "LangchainCallbackHandler"),
    "mlflow.langchain.langchain_tracer": (MLFLOW, "MlflowLangchainTracer"),
}
MAX_TRACKED_RUNS = 10_000
"""Model runs whose peer handlers are remembered (weakly), oldest forgotten first."""


_lock = threading.Lock()
_runs: dict[UUID, tuple[tuple[str, weakref.ref[Any]], ...]] = {}  # model run → its peer handlers
_installed: list[tuple[type, Callable[..., None]]] = []


def log_once(key: str, message: str, consequence: str = "confidence goes on a span of our own for such runs") -> None:
    """Warn once per process per ``key``; messages name peers and exception types, never content."""
    _peer_spans.log_once(key, f"observability: {message}; {consequence}")


def _changed(peer: str, what: str) -> None:
    log_once(peer, f"{peer}'s LangChain instrumentation does not look like the version we know ({what})")


def _peer_of(handler: Any) -> str | None:
    """The peer a handler belongs to; logs once for a peer module whose handler class we do not know."""
    module = type(handler).__module__
    for prefix, (peer, class_name) in _PEER_MODULES.items():
        if module.startswith(prefix):
            if type(handler).__name__ == class_name:
                return peer
            _changed(peer, f"unknown handler class {type(handler).__name__}")
    return None


def _ours(handler: Any) -> bool:
    """One of our handlers (by a class marker, so that two copies of the package agree)."""
    return getattr(type(handler), "_before_peer_tracers", False) is True


def _reorder(manager: Any) -> None:
    """Remember this model run's peer handlers, and move the ones that come before our last handler
    to just behind it.

    Only peers move, and only later: every other handler (the app's, ours) keeps its place relative
    to the others, and the peers keep their order among themselves. So an app handler that ran
    before ours without a peer still does with one."""
    handlers = manager.handlers
    last_ours = -1
    peers: list[tuple[int, str]] = []
    for index, handler in enumerate(handlers):
        if _ours(handler):
            last_ours = index
        else:
            peer = _peer_of(handler)
            if peer is not None:
                peers.append((index, peer))
    if not peers or last_ours < 0:
        return
    _remember(manager.run_id, tuple((peer, weakref.ref(handlers[index])) for index, peer in peers))
    early = [index for index, _ in peers if index < last_ours]
    if not early:
        return
    moved = set(early)
    reordered = [h for index, h in enumerate(handlers[:last_ours + 1]) if index not in moved]
    # A new list: the run manager shares its parent manager's list, which stays as it was.
    manager.handlers = [*reordered, *(handlers[index] for index in early), *handlers[last_ours + 1:]]


def _remember(run_id: UUID, peers: tuple[tuple[str, weakref.ref[Any]], ...]) -> None:
    with _lock:
        while len(_runs) >= MAX_TRACKED_RUNS:
            _runs.pop(next(iter(_runs)))
        _runs[run_id] = peers


def _make_init(cls: type[Any]) -> Callable[..., None]:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        super(cls, self).__init__(*args, **kwargs)
        try:
            _reorder(self)
        except Exception as exc:  # never break the app's call
            log_once("ordering", f"putting our handler before the peer tracers failed ({type(exc).__name__})")

    __init__.__qualname__ = f"{cls.__name__}.__init__"
    __init__._observability_peers = True  # type: ignore[attr-defined]
    return __init__


def install() -> None:
    """Put our handlers first in every model run's handler list (idempotent, process-wide)."""
    from langchain_core.callbacks.manager import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun

    refused = []
    with _lock:
        if _installed:
            return
        for cls in (CallbackManagerForLLMRun, AsyncCallbackManagerForLLMRun):
            existing = vars(cls).get("__init__")
            if existing is not None:  # another copy of this package did it already, or a newer langchain-core
                if not getattr(existing, "_observability_peers", False):
                    refused.append(cls.__name__)
                continue
            init = _make_init(cls)
            cls.__init__ = init  # type: ignore[method-assign]
            _installed.append((cls, init))
    for name in refused:
        log_once("ordering", f"langchain-core's {name} defines __init__, so our handler is not moved before "
                 "the peer tracers")


def uninstall() -> None:
    """Undo ``install`` (tests; the ordering is harmless to leave in place otherwise)."""
    with _lock:
        while _installed:
            cls, init = _installed.pop()
            if vars(cls).get("__init__") is init:
                del cls.__init__  # type: ignore[misc]
        _runs.clear()


def _peer_handlers(run_id: UUID) -> list[tuple[str, Any]]:
    """The peer handlers that took part in this model run (still alive), in list order."""
    with _lock:
        seen = _runs.get(run_id, ())
    found = []
    for peer, ref in seen:
        handler = ref()
        if handler is not None:
            found.append((peer, handler))
    return found


def find_records(run_id: UUID) -> PeerRecords | None:
    """Other tracers' records of this model run, read once when it ends (None: no peer saw it).

    Span peers give their live span of the run (a peer that no longer exposes its run map as
    expected makes ``spans`` None: the span exporter then makes its own); LangSmith and Langfuse
    and MLflow give their own run object (one that does not is logged once and named in ``failed``)."""
    if not _runs:
        return None
    handlers = _peer_handlers(run_id)
    if not handlers:
        return None
    spans: list[Any] | None = []
    runs: list[tuple[str, Any]] = []
    failed: list[str] = []
    for peer, handler in handlers:
        if peer in _SPAN_LOOKUPS and spans is not None:
            try:
                span = _SPAN_LOOKUPS[peer](handler, run_id)
            except Exception as exc:
                _changed(peer, f"{type(exc).__name__} reading its run map")
                spans = None
            else:
                if span is not None:
                    spans.append(span)
        if peer in _RUN_LOOKUPS:
            try:
                run = _RUN_LOOKUPS[peer](handler, run_id)
            except Exception as exc:
                failed.append(peer)
                log_once(f"{peer} run", f"{peer}'s LangChain handler does not look like the version we know "
                         f"({type(exc).__name__} finding its run)", "its runs go on without our figures")
            else:
                if run is not None:
                    runs.append((peer, run))
    return PeerRecords(run_id, spans, tuple(runs), tuple(failed))


def _openinference_span(tracer: Any, run_id: UUID) -> Any:
    return tracer.get_span(run_id)


def _otel_genai_span(handler: Any, run_id: UUID) -> Any:
    """The official instrumentation keeps one util-genai invocation per run; a model run's is an
    ``InferenceInvocation`` whose ``span`` it ends in ``stop()`` / ``fail()``."""
    invocation = handler._invocation_manager.get_invocation(run_id)
    return None if invocation is None else invocation.span


def langfuse_generation(handler: Any, run_id: UUID) -> Any:
    """Langfuse's ``LangfuseGeneration`` for this run (its private ``_runs`` map; ``runs`` before v4)."""
    runs = handler._runs
    if not isinstance(runs, Mapping):
        raise TypeError("_runs is not a mapping")
    return runs.get(run_id)


def _langfuse_span(handler: Any, run_id: UUID) -> Any:
    generation = langfuse_generation(handler, run_id)
    return None if generation is None else generation._otel_span


def _openllmetry_span(handler: Any, run_id: UUID) -> Any:
    spans = handler.spans
    if not isinstance(spans, Mapping):
        raise TypeError("spans is not a mapping")
    holder = spans.get(run_id)
    return None if holder is None else holder.span


def _langsmith_run(tracer: Any, run_id: UUID) -> Any:
    """LangSmith's ``Run`` for this model run (the tracer's public ``run_map``)."""
    return tracer.run_map.get(str(run_id))


def _mlflow_span(tracer: Any, run_id: UUID) -> Any:
    """MLflow's open ``LiveSpan`` for this run, or None (its tracer's private ``_run_span_mapping``;
    read only on the major version we tested)."""
    if not _mlflow_tested():
        return None
    mapping = tracer._run_span_mapping
    if not isinstance(mapping, Mapping):
        raise TypeError("_run_span_mapping is not a mapping")
    held = mapping.get(str(run_id))
    return None if held is None else held.span


MLFLOW_TESTED_MAJOR = "3."
"""MLflow versions whose private run map we read (tested: 3.18.0); others go without figures."""
_mlflow_ok: bool | None = None


def _mlflow_tested() -> bool:
    global _mlflow_ok
    if _mlflow_ok is None:
        from mlflow.version import VERSION

        _mlflow_ok = str(VERSION).startswith(MLFLOW_TESTED_MAJOR)
        if not _mlflow_ok:
            log_once(f"{MLFLOW} version", f"MLflow {VERSION} is not a version we tested (3.x)",
                     "its spans go on without our figures")
    return _mlflow_ok


_SPAN_LOOKUPS: dict[str, Callable[[Any, UUID], Any]] = {OPENINFERENCE: _openinference_span,
                                                        OPENLLMETRY: _openllmetry_span,
                                                        OTEL_GENAI: _otel_genai_span,
                                                        LANGFUSE: _langfuse_span}
"""Peers whose model-run record is an OpenTelemetry span the span exporter can write to."""
_RUN_LOOKUPS: dict[str, Callable[[Any, UUID], Any]] = {LANGSMITH: _langsmith_run, LANGFUSE: langfuse_generation,
                                                       MLFLOW: _mlflow_span}
"""Tracers that keep run objects of their own (``observability.langchain.tracer_runs`` writes to them)."""


_peer_spans.connect(install=install)
