"""Attach the handler to runs the app did not pass it to: a context manager and process-wide.

Both ride on LangChain's configure hooks (``register_configure_hook``): every time LangChain
builds the callback manager of a run, it asks each registered variable for a handler and adds
it, unless that very handler is already there. Nothing of LangChain is patched.

- ``observe_confidence()`` sets a ``ContextVar``: runs started in this context and in contexts
  copied from it (asyncio tasks, ``batch`` worker threads, LangGraph nodes) are observed; after
  the block, none are. Nested blocks: the innermost handler observes.
- The process-wide slot (zero-code activation) is a stand-in for a ``ContextVar`` whose
  ``get()`` returns one shared handler in every thread and context, or None once detached. A
  real ``ContextVar`` set at activation would miss threads started without a copied context,
  and LangChain's ``env_var=`` option would construct a new handler on every ``configure()``
  call; one shared handler means one run map and one set of exporters, so nothing is counted
  twice or lost, and construction costs nothing per run.

The context manager's hook is registered first: when both are active and share exporters, the
block's handler sees each run first and observes it (see ``observability._dedupe``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any, cast

from langchain_core.tracers.context import register_configure_hook

from observability import _enable_logprobs
from observability._config import DEFAULT_TOP_LOGPROBS, AttachConfig
from observability._dedupe import ExportGroups
from observability._handler import ConfidenceCallbackHandler

logger = logging.getLogger("observability")

_block_handler: ContextVar[ConfidenceCallbackHandler | None] = ContextVar(
    "observability_confidence_handler", default=None)


class _ProcessWideSlot:
    """Quacks like ``ContextVar.get()`` for LangChain's hook loop; the same answer in every context."""

    __slots__ = ("handler",)

    def __init__(self) -> None:
        self.handler: ConfidenceCallbackHandler | None = None

    def get(self) -> ConfidenceCallbackHandler | None:
        return self.handler


_process_wide = _ProcessWideSlot()
_process_lock = threading.Lock()
_process_undo: list[Any] = []  # what attach_process_wide() started besides the handler
_process_config: list[AttachConfig] = []  # the config the process-wide handler was built from

register_configure_hook(_block_handler, inheritable=True)
register_configure_hook(cast("ContextVar[ConfidenceCallbackHandler | None]", _process_wide), inheritable=True)


@contextmanager
def observe_confidence(*, enable_logprobs: bool = False, top_logprobs: int = DEFAULT_TOP_LOGPROBS,
                       **handler_options: Any) -> Iterator[ConfidenceCallbackHandler]:
    """Observe every LangChain run started inside the block; yields the handler.

    ``handler_options`` go to ``ConfidenceCallbackHandler`` (``exporters``, ``on_report``,
    ``low_confidence_threshold``, ...). ``enable_logprobs=True`` also makes OpenAI-compatible
    chat models called in the block ask for logprobs with ``top_logprobs`` alternatives when
    the app did not (see ``observability._enable_logprobs``).

    Covers sync and async calls, ``batch`` worker threads, nested chains and LangGraph graphs
    run in the block. Not covered: a bare ``threading.Thread`` started in the block (it does
    not copy the context); pass the handler in its ``config`` instead.
    """
    if not isinstance(enable_logprobs, bool):
        raise TypeError(f"enable_logprobs must be True or False, got {enable_logprobs!r}")
    handler = ConfidenceCallbackHandler(**handler_options)
    logprobs = _enable_logprobs.logprobs_enabled(top_logprobs) if enable_logprobs else nullcontext()
    with logprobs:
        token = _block_handler.set(handler)
        try:
            yield handler
        finally:
            _block_handler.reset(token)


def process_wide_handler() -> ConfidenceCallbackHandler | None:
    """The handler attached to every run of the process, if any."""
    return _process_wide.handler


def attach_process_wide(config: AttachConfig | None = None, **handler_options: Any) -> ConfidenceCallbackHandler:
    """Attach one handler to every LangChain run in the process, configured from ``config``.

    ``config`` defaults to ``AttachConfig.from_env()``. Unless ``exporters`` is given, the handler
    gets the default exporters with the config's metadata label allowlist (and any
    ``tracer_provider`` / ``meter_provider`` / ``registry`` given). Also turns logprobs on and
    serves ``/metrics`` when the config says so. Replaces a handler attached before.
    """
    config = config or AttachConfig.from_env()
    sinks = {k: handler_options.pop(k) for k in ("tracer_provider", "meter_provider", "registry")
             if k in handler_options}
    default = "exporters" not in handler_options
    if default:
        from observability.exporters import default_exporters

        handler_options["exporters"] = default_exporters(metadata_labels=config.metadata_labels,
                                                         trace_run_tree=config.trace_run_tree, **sinks)
    handler_options.setdefault("low_confidence_threshold", config.low_confidence_threshold)
    handler = ConfidenceCallbackHandler(**handler_options)
    if default:
        # These are the default exporters (with our labels): dedupe with handlers built with
        # exporters=None, which feed the same providers and registry.
        handler._export_groups = ExportGroups(handler.exporters, default_count=len(handler.exporters))
    with _process_lock:
        _detach_locked()
        try:
            if config.enable_logprobs:
                _enable_logprobs.enable_logprobs(config.top_logprobs)
                _process_undo.append(_enable_logprobs.disable_logprobs)
            if config.prometheus_port is not None:
                _process_undo.append(_serve_metrics(config, sinks.get("registry")))
        except BaseException:
            _detach_locked()
            raise
        _process_wide.handler = handler
        _process_config.append(config)
    return handler


def detach_process_wide() -> None:
    """Detach the process-wide handler and undo what attaching started (logprobs patch, /metrics)."""
    with _process_lock:
        _detach_locked()


def process_wide_config() -> AttachConfig | None:
    """The configuration the process-wide handler was attached with, if one is attached."""
    return _process_config[-1] if _process_config else None


def _detach_locked() -> None:
    _process_wide.handler = None
    _process_config.clear()
    while _process_undo:
        undo = _process_undo.pop()
        try:
            undo()
        except Exception as exc:  # detaching must not break the app either
            logger.warning("observability: detaching failed (%s: %s)", type(exc).__name__, exc)


def _serve_metrics(config: AttachConfig, registry: Any) -> Any:
    import prometheus_client

    kwargs = {"registry": registry} if registry is not None else {}
    try:
        server, thread = prometheus_client.start_http_server(
            config.prometheus_port or 0, addr=config.prometheus_host, **kwargs)
    except OSError as exc:
        raise OSError(f"cannot serve /metrics on {config.prometheus_host}:{config.prometheus_port} ({exc}); "
                      "choose a free port in OBSERVABILITY_PROMETHEUS_PORT") from exc
    logger.info("observability: serving Prometheus /metrics on %s:%s", config.prometheus_host,
                config.prometheus_port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


def activate_from_env() -> ConfidenceCallbackHandler | None:
    """Called on ``import observability``: attach process-wide when ``OBSERVABILITY_LANGCHAIN=1``."""
    config = AttachConfig.from_env()
    if config.activation != "on" or _process_wide.handler is not None:
        return None
    return attach_process_wide(config)
