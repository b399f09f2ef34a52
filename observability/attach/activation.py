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
block's handler sees each run first and observes it (see ``observability.langchain.dedupe``).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any, cast

from langchain_core.tracers.context import register_configure_hook

from observability.attach.config import (
    NO_LOGPROBS_PATCH,
    NO_METRICS_SERVER,
    OBSERVABILITY_ENABLE_LOGPROBS,
    OBSERVABILITY_LANGCHAIN,
    OBSERVABILITY_PROMETHEUS_HOST,
    OBSERVABILITY_PROMETHEUS_PORT,
    Activation,
    AttachConfig,
    ConfigError,
    ConfigProblem,
    read_activation,
    read_env,
    with_overrides,
)
from observability.langchain import enable_logprobs as _enable_logprobs
from observability.langchain.dedupe import ExportGroups
from observability.langchain.enable_logprobs import DEFAULT_TOP_LOGPROBS
from observability.langchain.handler import ConfidenceCallbackHandler

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
    the app did not (see ``observability.langchain.enable_logprobs``).

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

    ``config`` defaults to the environment (``read_env()``; a bad value is logged once, naming the
    variable, and raises ``ConfigError`` only when no handler can be built from it). Unless
    ``exporters`` is given, the handler gets the default exporters with the config's metadata
    label allowlist (and any ``tracer_provider`` / ``meter_provider`` / ``registry`` given). Also
    turns logprobs on and serves ``/metrics`` when the config says so; when either cannot start
    (langchain-openai missing or changed, the port busy) that part is logged once as an error and
    the handler is attached without it. Replaces a handler attached before.
    """
    if config is None:
        reading = read_env()
        report_problems(reading.problems)
        fatal = [p for p in reading.problems if p.fatal]
        if fatal:
            raise ConfigError(fatal[0].variable, fatal[0].value, fatal[0].fix)
        config = reading.config
    sinks = {k: handler_options.pop(k) for k in ("tracer_provider", "meter_provider", "registry")
             if k in handler_options}
    default = "exporters" not in handler_options
    if default:
        from observability.exporters import default_exporters

        handler_options["exporters"] = default_exporters(metadata_labels=config.metadata_labels,
                                                         trace_run_tree=config.trace_run_tree, **sinks)
    handler_options.setdefault("low_confidence_threshold", config.low_confidence_threshold)
    handler_options.setdefault("calibration", config.calibration)
    handler = ConfidenceCallbackHandler(**handler_options)
    if default:
        # These are the default exporters (with our labels): dedupe with handlers built with
        # exporters=None, which feed the same providers and registry.
        handler._export_groups = ExportGroups(handler.exporters, default_count=len(handler.exporters))
    with _process_lock:
        _detach_locked()
        if config.enable_logprobs:
            _start_logprobs_patch(config)
        if config.prometheus_port is not None:
            _start_metrics_server(config, sinks.get("registry"))
        _process_wide.handler = handler
        _process_config.append(config)
    return handler


def _start_logprobs_patch(config: AttachConfig) -> None:
    try:
        _enable_logprobs.enable_logprobs(config.top_logprobs)
    except Exception as exc:  # langchain-openai missing or changed, or anything of ours: attach without it
        report_once(*logprobs_patch_problem(exc))
        return
    _process_undo.append(_enable_logprobs.disable_logprobs)


def _start_metrics_server(config: AttachConfig, registry: Any) -> None:
    try:
        _process_undo.append(_serve_metrics(config, registry))
    except Exception as exc:  # a busy port, an address that does not resolve or bind here
        report_once(logging.ERROR, metrics_server_problem(config, type(exc).__name__))


def logprobs_patch_problem(exc: BaseException) -> tuple[int, str]:
    """The level and message for a logprobs patch that cannot start (shared with the doctor)."""
    if isinstance(exc, _enable_logprobs.Incompatible):  # a langchain-openai release we do not know
        return logging.WARNING, f"observability: {OBSERVABILITY_ENABLE_LOGPROBS} is on but {exc}"
    reason = str(exc) if isinstance(exc, _enable_logprobs.PatchUnavailable) else \
        f"the logprobs patch failed to start ({type(exc).__name__})"
    return logging.ERROR, f"observability: {OBSERVABILITY_ENABLE_LOGPROBS} is on but {reason}; {NO_LOGPROBS_PATCH}"


def metrics_server_problem(config: AttachConfig, reason: str) -> str:
    """The message for a ``/metrics`` server that cannot listen (shared with the doctor)."""
    return (f"observability: cannot serve /metrics on {config.prometheus_host}:{config.prometheus_port} ({reason}): "
            f"choose a free port in {OBSERVABILITY_PROMETHEUS_PORT} (or stop what uses it) and an address of this "
            f"host in {OBSERVABILITY_PROMETHEUS_HOST}; {NO_METRICS_SERVER}")


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
            logger.warning("observability: detaching failed (%s)", type(exc).__name__)


def _serve_metrics(config: AttachConfig, registry: Any) -> Any:
    import prometheus_client

    kwargs = {"registry": registry} if registry is not None else {}
    server, thread = prometheus_client.start_http_server(
        config.prometheus_port or 0, addr=config.prometheus_host, **kwargs)
    logger.info("observability: serving Prometheus /metrics on %s:%s", config.prometheus_host,
                config.prometheus_port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


def activate_from_env(environ: Mapping[str, str] | None = None,
                      **handler_options: Any) -> ConfidenceCallbackHandler | None:
    """Called on ``import observability``: attach process-wide when ``OBSERVABILITY_LANGCHAIN`` is on.

    Never raises. Nothing but ``OBSERVABILITY_LANGCHAIN`` is read unless it is on; every problem
    (a bad value, a missing optional dependency, a busy port) is logged once as an error naming
    the variable and the fix, and the app runs on without the handler or without that part.
    ``handler_options`` go to ``attach_process_wide`` (tests pass their own sinks).
    """
    if _running_our_command_line():
        return None  # `python -m observability doctor|demo` checks or runs its own handler; it never attaches itself
    return _guarded(lambda: _activate(environ, wanted=("on",), overrides={}, handler_options=handler_options))


def _running_our_command_line() -> bool:
    argv = list(getattr(sys, "orig_argv", ()))
    return any((arg == "-m" and argv[i + 1:i + 2] == ["observability"]) or arg == "-mobservability"
               for i, arg in enumerate(argv))


def instrument_from_env(overrides: Mapping[str, Any], handler_options: dict[str, Any]) -> None:
    """The OpenTelemetry instrumentor's activation (``OBSERVABILITY_LANGCHAIN`` on or unset); never raises."""
    _guarded(lambda: _activate(None, wanted=("on", "auto"), overrides=overrides, handler_options=handler_options))


def _guarded(activate: Callable[[], ConfidenceCallbackHandler | None]) -> ConfidenceCallbackHandler | None:
    try:
        return activate()
    except Exception as exc:  # whatever the environment holds, the app's import goes on
        report_once(logging.ERROR, f"observability: attaching to LangChain runs failed ({type(exc).__name__}); "
                    f"the app runs unobserved. Run `python -m observability doctor` for a diagnosis.")
        return None


def _activate(environ: Mapping[str, str] | None, wanted: tuple[Activation, ...], overrides: Mapping[str, Any],
              handler_options: dict[str, Any]) -> ConfidenceCallbackHandler | None:
    activation, problem = read_activation(environ)
    if problem is not None:
        report_problems([problem])
        return None
    if activation not in wanted:
        if activation == "off" and "auto" in wanted:
            logger.info("observability: %s is off; not attaching to LangChain runs", OBSERVABILITY_LANGCHAIN)
        return None
    reading = read_env(environ)
    report_problems(reading.problems)
    if reading.fatal:
        return None
    config = with_overrides(reading.config, **overrides)
    current = _process_wide.handler
    if current is not None and (wanted == ("on",) or (not handler_options and process_wide_config() == config)):
        return None  # already attached (OBSERVABILITY_LANGCHAIN=1 did it on import, with this very config)
    return attach_process_wide(config, **handler_options)


# ---- reporting: once per message, visible even when the app configured no logging -------------
_reported: set[str] = set()
_reported_lock = threading.Lock()


def report_problems(problems: Iterable[ConfigProblem]) -> None:
    for problem in problems:
        report_once(logging.ERROR, config_problem_message(problem))


DOCTOR_HINT = ". Check the whole configuration with `python -m observability doctor`."


def config_problem_message(problem: ConfigProblem) -> str:
    return f"observability: {problem.message}{DOCTOR_HINT}"


def report_once(level: int, message: str) -> None:
    """Log ``message`` once per process. When the app configured no logging handler (our logger
    has only its ``NullHandler``), it goes to stderr like an unhandled warning would."""
    with _reported_lock:
        if message in _reported:
            return
        _reported.add(message)
    record = logger.makeRecord(logger.name, level, "(observability)", 0, message, (), None)
    if logger.isEnabledFor(level):
        logger.handle(record)
    if not _has_real_handler(logger) and logging.lastResort is not None and level >= logging.lastResort.level:
        logging.lastResort.handle(record)


def _has_real_handler(log: logging.Logger) -> bool:
    current: logging.Logger | None = log
    while current is not None:
        if any(not isinstance(h, logging.NullHandler) for h in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False
