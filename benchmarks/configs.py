"""The instrumentation configurations a benchmark compares, all sharing one set of sinks.

Every configuration that makes spans uses the same SDK ``TracerProvider`` (a
``BatchSpanProcessor`` in front of ``CountingSpanExporter``, which keeps nothing), the same
``MeterProvider`` (an ``InMemoryMetricReader``, read only when asked) and a fresh Prometheus
``CollectorRegistry``. The peers attach themselves the way their instrumentors do, by wrapping
``BaseCallbackManager.__init__``; the harness swaps that one attribute in and out around each
sample, so all configurations can be interleaved in one process.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from types import ModuleType
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from observability import ConfidenceCallbackHandler

BASELINE = "no handler"
NOOP = "no-op handler"
SCORING = "ours, scoring only"
FULL = "ours, full"
OPENINFERENCE = "OpenInference"
OPENLLMETRY = "OpenLLMetry"
BEFORE_SCORING = "before: ours, scoring only"
BEFORE_FULL = "before: ours, full"
"""The same two configurations of an older copy of the package (``--before``, ``benchmarks/before.py``)."""
ALL = (BASELINE, NOOP, SCORING, FULL, OPENINFERENCE, OPENLLMETRY)
BEFORE = (BEFORE_SCORING, BEFORE_FULL)
PEERS = (OPENINFERENCE, OPENLLMETRY)
KEYS = {"baseline": BASELINE, "noop": NOOP, "scoring": SCORING, "full": FULL, "openinference": OPENINFERENCE,
        "openllmetry": OPENLLMETRY}
"""Short names for the command line."""


class NoopHandler(BaseCallbackHandler):
    """Receives every model event and does nothing: the dispatch floor. Inline like ours, so
    async code does not pay an executor hop per event."""

    run_inline = True


class CountingSpanExporter(SpanExporter):
    """Counts exported spans per instrumentation scope, keeps none of them."""

    def __init__(self) -> None:
        self.by_scope: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for span in spans:
                scope = span.instrumentation_scope
                self.by_scope[scope.name if scope is not None else "?"] += 1
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@dataclass
class Sinks:
    """The telemetry backends every configuration writes to."""

    span_exporter: CountingSpanExporter = field(default_factory=CountingSpanExporter)
    metric_reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    tracer_provider: TracerProvider = field(init=False)
    meter_provider: MeterProvider = field(init=False)

    def __post_init__(self) -> None:
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(BatchSpanProcessor(self.span_exporter))
        self.meter_provider = MeterProvider(metric_readers=[self.metric_reader])

    def flush(self) -> None:
        self.tracer_provider.force_flush()

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def full_exporters(sinks: Sinks) -> list[Any]:
    """Our standard exporters (OTel spans and metrics, Prometheus with exemplars) on ``sinks``."""
    from observability.exporters import default_exporters

    return list(default_exporters(tracer_provider=sinks.tracer_provider, meter_provider=sinks.meter_provider,
                                  registry=sinks.registry))


@dataclass
class Configuration:
    """One way of running the model: the callbacks to pass and the ``BaseCallbackManager``
    constructor that is active while it runs (a peer's instrumentor wrapper, or LangChain's own)."""

    name: str
    callbacks: list[BaseCallbackHandler]
    manager_init: Any
    handler: Any = None  # ours (or the older copy's handler): checked for open runs and failures

    @contextmanager
    def active(self) -> Iterator[None]:
        original = BaseCallbackManager.__dict__["__init__"]
        BaseCallbackManager.__init__ = self.manager_init  # type: ignore[method-assign]
        try:
            yield
        finally:
            BaseCallbackManager.__init__ = original  # type: ignore[method-assign]


def _instrumented_init(instrument: Callable[[], Any], uninstrument: Callable[[], Any]) -> Any:
    """Run a peer's instrumentor once and keep the ``BaseCallbackManager.__init__`` it installs."""
    original = BaseCallbackManager.__dict__["__init__"]
    instrument()
    wrapped = BaseCallbackManager.__dict__["__init__"]
    if wrapped is original:
        raise RuntimeError("the instrumentor did not wrap BaseCallbackManager.__init__; its attach point moved")
    uninstrument()
    BaseCallbackManager.__init__ = original  # type: ignore[method-assign]
    return wrapped


def build(names: Sequence[str], sinks: Sinks, *, before: ModuleType | None = None,
          before_sinks: Sinks | None = None) -> list[Configuration]:
    """Build the named configurations (see ``ALL``). Peers need the benchmark environment.
    With ``before`` (an older copy of the package, ``benchmarks.before.load``), ``BEFORE``'s two
    configurations are added at the end, exporting to ``before_sinks`` (their own registry and
    providers, so the two copies' instruments never meet)."""
    plain = BaseCallbackManager.__dict__["__init__"]
    configs: list[Configuration] = []
    if before is not None:
        names = [*names, *BEFORE]
    for name in names:
        if name == BASELINE:
            configs.append(Configuration(name, [], plain))
        elif name == NOOP:
            configs.append(Configuration(name, [NoopHandler()], plain))
        elif name == SCORING:
            handler = ConfidenceCallbackHandler(exporters=())
            configs.append(Configuration(name, [handler], plain, handler))
        elif name == FULL:
            handler = ConfidenceCallbackHandler(exporters=full_exporters(sinks))
            configs.append(Configuration(name, [handler], plain, handler))
        elif name == OPENINFERENCE:
            from openinference.instrumentation.langchain import LangChainInstrumentor

            oi = LangChainInstrumentor()
            init = _instrumented_init(partial(oi.instrument, tracer_provider=sinks.tracer_provider), oi.uninstrument)
            configs.append(Configuration(name, [], init))
        elif name == OPENLLMETRY:
            from opentelemetry.instrumentation.langchain import LangchainInstrumentor

            ol = LangchainInstrumentor()
            init = _instrumented_init(
                partial(ol.instrument, tracer_provider=sinks.tracer_provider, meter_provider=sinks.meter_provider),
                ol.uninstrument)
            configs.append(Configuration(name, [], init))
        elif name in BEFORE and before is not None:
            exporters: list[Any] = []
            if name == BEFORE_FULL:
                from importlib import import_module

                old = import_module(f"{before.__name__}.exporters")
                target = before_sinks or Sinks()
                exporters = list(old.default_exporters(tracer_provider=target.tracer_provider,
                                                       meter_provider=target.meter_provider,
                                                       registry=target.registry))
            handler = before.ConfidenceCallbackHandler(exporters=exporters)
            configs.append(Configuration(name, [handler], plain, handler))
        else:
            raise ValueError(f"unknown configuration {name!r}; choose from {', '.join(ALL)}")
    return configs
