"""``opentelemetry-instrument`` on the unmodified example app, and ``uninstrument()``.

The app (examples/app.py, which never imports this package) runs in a subprocess under
``.venv/bin/opentelemetry-instrument`` against the real local model. Spans and OpenTelemetry
metrics go over OTLP/HTTP to a receiver in this test process; Prometheus metrics are scraped
from the app's ``/metrics`` (``OBSERVABILITY_PROMETHEUS_PORT``).
"""

from __future__ import annotations

import ast
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_openai.chat_models.base import BaseChatOpenAI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from observability import ResponseRecord
from observability.attach import activation as _attach
from observability.demo.model_server import MODEL_NAME, LocalModelServer
from observability.demo.process import ManagedProcess, free_port
from observability.instrumentation import ConfidenceInstrumentor
from observability.langchain import enable_logprobs as logprobs_patch
from tests.attach_support import otlp_metric_names, otlp_spans, scrape, total
from tests.http_support import otlp_receiver

ROOT = Path(__file__).resolve().parent.parent
INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"
APP_CALLS = 5  # examples/app.py: invoke, stream, batch of two, async invoke


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module a script imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def wait_for(condition: Any, timeout: float, what: str, app: ManagedProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if app is not None and (app.process is None or app.process.poll() is not None):
            pytest.fail(f"the app exited before {what}:\n{app.tail()}", pytrace=False)
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}" + (f":\n{app.tail()}" if app else ""),
                pytrace=False)


@pytest.mark.real_model
@pytest.mark.parametrize(("enable", "expected_logprobs"), [("true", "present"), ("false", "not_requested")])
def test_opentelemetry_instrument_observes_the_unmodified_app(
        local_model: LocalModelServer, tmp_path: Path, enable: str, expected_logprobs: str) -> None:
    assert imported_modules(ROOT / "examples" / "app.py").isdisjoint({"observability"})
    port = free_port()
    with otlp_receiver() as otlp:
        env = {**os.environ, "APP_BASE_URL": local_model.base_url, "APP_MODEL": MODEL_NAME, "APP_KEEP_RUNNING": "1",
               "OTEL_SERVICE_NAME": "example-app", "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp",
               "OTEL_LOGS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
               "OTEL_EXPORTER_OTLP_ENDPOINT": otlp["endpoint"], "OTEL_BSP_SCHEDULE_DELAY": "200",
               "OBSERVABILITY_PROMETHEUS_PORT": str(port), "OBSERVABILITY_ENABLE_LOGPROBS": enable,
               "OBSERVABILITY_METADATA_LABELS": "ls_model_type", "OBSERVABILITY_TRACE_RUN_TREE": enable,
               # The peer LangChain instrumentations installed for tests/test_peer_tracers.py register
               # as "langchain" and would be loaded too (their spans would then carry our figures).
               "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "langchain"}
        env.pop("OBSERVABILITY_LANGCHAIN", None)
        if enable == "false":  # env activation on import and the instrumentor: still one handler
            env["OBSERVABILITY_LANGCHAIN"] = "1"
        app = ManagedProcess("example-app", [str(INSTRUMENT), sys.executable, str(ROOT / "examples" / "app.py")],
                             f"http://127.0.0.1:{port}/metrics", env=env, cwd=ROOT,
                             log_path=tmp_path / "app.log", startup_timeout=120)
        with app:
            wait_for(lambda: "done: 5 model calls" in app.tail(), 600, "the app's five calls", app)
            samples = scrape(f"http://127.0.0.1:{port}/metrics")
        # stopped with SIGTERM: the app exits normally, the SDK flushes spans and metrics at exit
        wait_for(lambda: otlp["/v1/traces"] and otlp["/v1/metrics"], 60, "OTLP exports")
        spans = otlp_spans(otlp["/v1/traces"])
        metric_names = otlp_metric_names(otlp["/v1/metrics"])

    assert total(samples, "llm_responses_total") == APP_CALLS
    assert total(samples, "llm_responses_total", status="ok", logprobs=expected_logprobs,
                 model=MODEL_NAME, ls_model_type="chat") == APP_CALLS
    scored = APP_CALLS if expected_logprobs == "present" else 0
    assert total(samples, "llm_response_sequence_probability_count") == scored

    model_spans = [s for s in spans if s["attributes"].get("llm.confidence.logprobs") is not None]
    assert len(model_spans) == APP_CALLS
    assert {s["name"] for s in model_spans} == {f"chat {MODEL_NAME}"}
    assert {s["attributes"]["llm.confidence.logprobs"] for s in model_spans} == {expected_logprobs}
    assert "llm.responses" in metric_names
    # OBSERVABILITY_TRACE_RUN_TREE follows the parameter: the app's chains get spans, and the
    # chain's model span shares its trace
    chain_spans = [s for s in spans if s["attributes"].get("llm.confidence.run.kind") == "chain"]
    assert bool(chain_spans) == (enable == "true")
    if chain_spans:
        assert {s["trace_id"] for s in model_spans} & {s["trace_id"] for s in chain_spans}


@pytest.fixture
def sinks() -> Iterator[tuple[InMemorySpanExporter, TracerProvider, MeterProvider, CollectorRegistry]]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    yield spans, tracer_provider, meter_provider, CollectorRegistry()
    if ConfidenceInstrumentor().is_instrumented_by_opentelemetry:
        ConfidenceInstrumentor().uninstrument()  # also when the test failed half-way
    tracer_provider.shutdown()
    meter_provider.shutdown()


def responses_total(registry: CollectorRegistry) -> float:
    return sum(sample.value for metric in registry.collect() for sample in metric.samples
               if sample.name == "llm_responses_total")


@pytest.mark.real_model
def test_uninstrument_leaves_no_trace(chat_model: Any, sinks: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    spans, tracer_provider, meter_provider, registry = sinks
    port = free_port()
    monkeypatch.setenv("OBSERVABILITY_PROMETHEUS_PORT", str(port))
    monkeypatch.delenv("OBSERVABILITY_LANGCHAIN", raising=False)
    before = {name: BaseChatOpenAI.__dict__[name] for name in logprobs_patch._PATCHED}
    reports: list[ResponseRecord] = []
    model = chat_model(max_tokens=8)

    instrumentor = ConfidenceInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, registry=registry,
                            enable_logprobs=True, top_logprobs=2, on_report=reports.append)
    model.invoke("Say hello.")
    assert len(spans.get_finished_spans()) == 1
    assert responses_total(registry) == 1
    assert reports[0].logprobs == "present" and all(len(t.top_logprobs) == 2 for t in reports[0].tokens)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        assert b"llm_responses_total" in response.read()

    instrumentor.uninstrument()
    model.invoke("Say hello again.")
    assert len(spans.get_finished_spans()) == 1  # no span after uninstrument()
    assert responses_total(registry) == 1
    assert len(reports) == 1
    assert _attach.process_wide_handler() is None
    assert not logprobs_patch.is_patched()
    assert all(BaseChatOpenAI.__dict__[name] is before[name] for name in before)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)

    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, registry=registry)
    model.invoke("And once more.")
    assert len(spans.get_finished_spans()) == 2  # instrument() works again after uninstrument()


def test_the_off_switch_keeps_the_instrumentor_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBSERVABILITY_LANGCHAIN", "0")
    instrumentor = ConfidenceInstrumentor()
    try:
        instrumentor.instrument()
        assert _attach.process_wide_handler() is None
    finally:
        instrumentor.uninstrument()


def test_the_entry_point_is_registered() -> None:
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.name == "langchain_confidence"]
    assert len(found) == 1 and found[0].load() is ConfidenceInstrumentor
