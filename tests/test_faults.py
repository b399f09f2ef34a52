"""Issue 8.2: exporter faults. An OTLP endpoint that refuses, hangs or is slow; a Prometheus registry
already holding a metric with our name; an exporter that raises. The app's call goes on with under
1 ms added per response, memory stays bounded (the span queue drops, it does not grow), and each of
our failures is logged once, not once per call.

Added latency is measured as CPU time of the calling thread (what the handler makes the app's
thread do), interleaving calls without a handler, with a handler whose exporters work, and with the
faulty one, and compared within the test: a fault may cost the call no more than working exporters
do (a ratio, so a loaded machine slows both sides alike). The wall time of every call must stay
below the exporters' network timeout, so a call that waited on the network would fail the test.
"""

from __future__ import annotations

import logging
import socket
import statistics
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry, Counter, Histogram

from observability import ConfidenceCallbackHandler, ResponseRecord
from observability.demo.process import free_port
from observability.exporters import default_exporters
from observability.testing import FakeLogprobChatModel, InMemoryTelemetry, RecordingExporter
from tests.fuzzing import SCALE
from tests.http_support import otlp_receiver

QUEUE = 64
EXPORT_TIMEOUT_S = 3  # a call that waited on the network would take at least this long


# ---- endpoints that misbehave, all on 127.0.0.1 ----------------------------------------------

@contextmanager
def refusing_endpoint() -> Iterator[str]:
    yield f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused


@contextmanager
def hanging_endpoint() -> Iterator[str]:
    """Accepts connections and never answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for connection in held:
            connection.close()
        server.close()


@contextmanager
def slow_endpoint(delay: float = 1.5) -> Iterator[str]:
    """Answers every request with an empty 200, after ``delay`` seconds."""
    with otlp_receiver(delay=delay) as received:
        yield received["endpoint"]


ENDPOINTS = {"refusing": refusing_endpoint, "hanging": hanging_endpoint, "slow": slow_endpoint}


# ---- measuring ---------------------------------------------------------------------------------

def measure(model: FakeLogprobChatModel, faulty: ConfidenceCallbackHandler, calls: int) -> dict[str, float]:
    """Interleaved calls without a handler, with a handler on working in-memory exporters, and with
    ``faulty``: the median thread CPU time each handler adds to a call, and the slowest wall time of
    a call with ``faulty``."""
    sinks = InMemoryTelemetry()
    healthy = ConfidenceCallbackHandler(exporters=sinks.exporters())
    cpu: dict[str, list[float]] = {"none": [], "healthy": [], "faulty": []}
    configs = {"none": None, "healthy": {"callbacks": [healthy]}, "faulty": {"callbacks": [faulty]}}
    slowest = 0.0
    try:
        for _ in range(calls):
            for name, config in configs.items():
                wall = time.perf_counter()
                start = time.thread_time()
                model.invoke("hi", config=config)  # type: ignore[arg-type]
                cpu[name].append(time.thread_time() - start)
                if name == "faulty":
                    slowest = max(slowest, time.perf_counter() - wall)
    finally:
        sinks.shutdown()
    base = statistics.median(cpu["none"])
    return {"faulty_added_s": statistics.median(cpu["faulty"]) - base,
            "healthy_added_s": statistics.median(cpu["healthy"]) - base,
            "base_cpu_s": base, "slowest_wall_s": slowest}


def assert_costs_no_more_than_working_exporters(figures: dict[str, float]) -> None:
    # Twice the working exporters' cost plus 100 µs of slack for timer granularity and noise: a call
    # that waited on a retry, a lock or the network would cost far more.
    assert figures["faulty_added_s"] <= 2 * figures["healthy_added_s"] + 100e-6, figures
    assert figures["slowest_wall_s"] < EXPORT_TIMEOUT_S, figures


class LogCounter(logging.Handler):
    """Counts log records of every logger, by logger name."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[str, int, str]] = []  # not the records: their tracebacks hold memory

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, record.levelno, record.getMessage()))

    def count(self, prefix: str, level: int = logging.WARNING) -> int:
        return sum(name.startswith(prefix) and levelno >= level for name, levelno, _ in self.records)

    def messages(self, prefix: str) -> list[str]:
        return [message for name, _, message in self.records if name.startswith(prefix)]


@contextmanager
def counting_logs(*names: str) -> Iterator[LogCounter]:
    """Count what these loggers emit, and keep it from other handlers: pytest's keeps every record,
    and the SDK's failure records carry tracebacks holding whole span batches."""
    counter = LogCounter()
    loggers = [logging.getLogger(name) for name in names or ("observability", "opentelemetry")]
    for logger in loggers:
        logger.addHandler(counter)
        logger.propagate = False
    try:
        yield counter
    finally:
        for logger in loggers:
            logger.removeHandler(counter)
            logger.propagate = True


# ---- OTLP endpoint faults ----------------------------------------------------------------------

# The fast tier (FUZZ_SCALE < 1) soaks one fault, the hanging endpoint (the one a call could wait
# on); `make test` soaks all three.
@pytest.mark.parametrize("fault", list(ENDPOINTS) if SCALE >= 1 else ["hanging"])
def test_otlp_endpoint_fault_costs_the_call_nothing_and_memory_stays_bounded(fault: str) -> None:
    model = FakeLogprobChatModel()
    with ENDPOINTS[fault]() as endpoint, counting_logs() as logs:
        spans = BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=EXPORT_TIMEOUT_S),
                                   max_queue_size=QUEUE, max_export_batch_size=QUEUE, schedule_delay_millis=50)
        tracer_provider = TracerProvider(shutdown_on_exit=False)
        tracer_provider.add_span_processor(spans)
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics", timeout=EXPORT_TIMEOUT_S),
            export_interval_millis=200, export_timeout_millis=EXPORT_TIMEOUT_S * 1000)
        meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
        registry = CollectorRegistry()
        handler = ConfidenceCallbackHandler(exporters=default_exporters(
            tracer_provider=tracer_provider, meter_provider=meter_provider, registry=registry))
        try:
            figures = measure(model, handler, 200)
            tracemalloc.start()
            memory: list[int] = []
            queued: list[int] = []
            for call in range(1, 2001):
                model.invoke("hi", config={"callbacks": [handler]})
                if call % 200 == 0 and call >= 400:  # after a warm-up, every 200 calls
                    memory.append(tracemalloc.get_traced_memory()[0])
                    queued.append(len(spans._batch_processor._queue))  # the SDK's span queue
            tracemalloc.stop()
        finally:
            tracer_provider.shutdown()
            meter_provider.shutdown(timeout_millis=1000)
    print(f"{fault}: added CPU per response {figures['faulty_added_s'] * 1e6:.0f} µs, with working exporters "
          f"{figures['healthy_added_s'] * 1e6:.0f} µs (call without handler {figures['base_cpu_s'] * 1e6:.0f} µs), "
          f"slowest call "
          f"{figures['slowest_wall_s'] * 1e3:.1f} ms, span queue at most {max(queued)}/{QUEUE}, traced memory "
          f"{min(memory) / 1e6:.2f}–{max(memory) / 1e6:.2f} MB over 1,600 calls, OTel SDK warnings in 2,200 calls "
          f"{logs.count('opentelemetry')}")
    assert dict(handler.errors) == {}
    assert registry.get_sample_value("llm_responses_total", {"provider": "fake", "model": "fake-logprobs",
                                                             "status": "ok", "logprobs": "present"}) == 2200
    assert_costs_no_more_than_working_exporters(figures)
    assert max(queued) <= QUEUE
    # Bounded: the queue, one batch in flight and the SDK's retry state swing by up to ~2 MB here;
    # an exporter keeping every span (InMemorySpanExporter) grows by ~10 MB over these 1,600 calls.
    assert max(memory) - memory[0] < 4_000_000, memory
    assert logs.count("observability") == 0  # nothing of ours failed: the SDK absorbs its own faults
    assert logs.count("opentelemetry") < 220  # the SDK logs per failed batch, not per call


# ---- a registry already holding our names ------------------------------------------------------

def test_registry_already_holding_our_metric_names_drops_only_those_and_logs_once() -> None:
    registry = CollectorRegistry()
    foreign_counter = Counter("llm_responses", "someone else's", ["team"], registry=registry)
    foreign_histogram = Histogram("llm_response_mean_top_margin", "someone else's", registry=registry)
    model = FakeLogprobChatModel()
    with counting_logs() as logs:
        handlers = [ConfidenceCallbackHandler(exporters=default_exporters(registry=registry)) for _ in range(2)]
        for i in range(100):
            model.invoke("hi", config={"callbacks": [handlers[i % 2]]})
    assert all(dict(h.errors) == {} for h in handlers)
    prometheus = handlers[0].exporters[-1]
    assert set(prometheus.dropped_metrics) == {"llm_responses_total", "llm_response_mean_top_margin"}  # type: ignore[attr-defined]
    # One warning per taken name, for both handlers and all 100 calls together.
    assert logs.count("observability") == 2, logs.messages("observability")
    # Everything else is recorded; the foreign metrics are untouched.
    labels = {"provider": "fake", "model": "fake-logprobs"}
    assert registry.get_sample_value("llm_response_sequence_probability_count", labels) == 100
    assert registry.get_sample_value("llm_response_tokens_count", labels) == 100
    assert foreign_counter.labels("x")._value.get() == 0
    assert registry.get_sample_value("llm_response_mean_top_margin_count") == 0
    assert foreign_histogram is not None


# ---- exporters that raise ----------------------------------------------------------------------

class Raising:
    def export(self, records: Any) -> None:
        raise RuntimeError("the sink is on fire")


class RaisingSpanProcessor(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        raise OSError("span sink unreachable")


def test_raising_exporters_are_logged_once_counted_and_do_not_stop_the_others() -> None:
    sinks = InMemoryTelemetry()
    sinks.tracer_provider.add_span_processor(RaisingSpanProcessor())
    recorder = RecordingExporter()
    reports: list[ResponseRecord] = []

    def on_report(record: ResponseRecord) -> None:
        reports.append(record)
        raise ValueError("the app's own hook fails too")

    handler = ConfidenceCallbackHandler(exporters=[Raising(), *sinks.exporters(), recorder], on_report=on_report)
    model = FakeLogprobChatModel()
    with counting_logs() as logs:
        figures = measure(model, handler, 200)
    sinks.shutdown()
    print(f"raising exporters: added CPU per response {figures['faulty_added_s'] * 1e6:.0f} µs, "
          f"with working exporters {figures['healthy_added_s'] * 1e6:.0f} µs, "
          f"slowest call {figures['slowest_wall_s'] * 1e3:.1f} ms")
    assert handler.errors == {"Raising.export": 200, "OpenTelemetryTracingExporter.export": 200, "on_report": 200}
    ours = logs.messages("observability")
    assert len(ours) == 3, ours  # once per failing place, not per call
    assert len(recorder.records) == len(reports) == 200  # the ones after the failures got everything
    assert sinks.sample("llm_responses_total") == 200
    assert_costs_no_more_than_working_exporters(figures)
