"""Our spans over OTLP/HTTP to a real Phoenix server, read back through its REST API.

Spans leave through the SDK's ``BatchSpanProcessor`` + ``OTLPSpanExporter`` (protobuf over HTTP),
as an app would send them; Phoenix files them under the project named by the resource attribute
``openinference.project.name``. Expected values are the records ``on_report`` received.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import openai
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from observability import ConfidenceCallbackHandler, ResponseRecord
from observability.demo.model_server import MODEL_NAME
from observability.demo.process import free_port
from observability.exporters import OpenTelemetryTracingExporter
from observability.exporters._otel_spans import EVALUATION_EVENT, HEADLINE_SCORES, REPORT_FIELDS
from tests.backends import PhoenixServer

pytestmark = [pytest.mark.real_model, pytest.mark.real_backend]


def wait_for_spans(phoenix: PhoenixServer, project: str, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        spans = phoenix.spans(project)
        if len(spans) >= count or time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


def test_spans_arrive_in_phoenix_with_the_records_values(phoenix: PhoenixServer, chat_model: Any) -> None:
    project = f"confidence-{uuid.uuid4().hex[:8]}"
    provider = TracerProvider(resource=Resource.create({"openinference.project.name": project,
                                                        "service.name": "export-test"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=phoenix.traces_endpoint, timeout=10)))
    records: list[ResponseRecord] = []
    handler = ConfidenceCallbackHandler(exporters=[OpenTelemetryTracingExporter(tracer_provider=provider)],
                                        on_report=records.append)
    config: Any = {"callbacks": [handler]}
    llm = chat_model(max_tokens=12).bind(logprobs=True, top_logprobs=3)
    with provider.get_tracer("app").start_as_current_span("POST /ask") as app_span:
        llm.invoke("Name a colour.", config=config)
        "".join(str(c.content) for c in llm.stream("Name a fruit.", config=config))
        with pytest.raises(openai.APIConnectionError):
            chat_model(base_url=f"http://127.0.0.1:{free_port()}/v1", timeout=5).invoke("hi", config=config)
    assert provider.force_flush(30_000)
    spans = wait_for_spans(phoenix, project, 4)
    provider.shutdown()

    by_id = {s["context"]["span_id"]: s for s in spans}
    app_id = format(app_span.get_span_context().span_id, "016x")
    trace_id = format(app_span.get_span_context().trace_id, "032x")
    assert len(spans) == 4 and app_id in by_id and len(records) == 3
    for record in records:
        span = by_id[record.trace["span_id"]]
        attrs = span["attributes"]
        assert span["name"] == f"chat {MODEL_NAME}"
        assert span["parent_id"] == app_id and span["context"]["trace_id"] == trace_id == record.trace["trace_id"]
        assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.provider.name"] == "openai"
        assert attrs["gen_ai.request.model"] == MODEL_NAME
        assert attrs["llm.confidence.status"] == record.status
        assert attrs["llm.confidence.logprobs"] == record.logprobs
        if record.status == "error":
            assert span["status_code"] == "ERROR" and attrs["error.type"] == record.error_type
            assert record.report is None and not [k for k in attrs if k.startswith("llm.confidence.seq")]
            continue
        report = record.report
        assert report is not None and span["status_code"] == "UNSET"
        assert attrs["gen_ai.response.model"] == record.response_model
        assert attrs["gen_ai.response.finish_reasons"] == [record.finish_reason]
        for name in REPORT_FIELDS:
            expected = getattr(report, name)
            if expected is not None:
                assert attrs[f"llm.confidence.{name}"] == expected, name
        evaluations = {e["attributes"]["gen_ai.evaluation.name"]: e["attributes"]["gen_ai.evaluation.score.value"]
                       for e in span["events"] if e["name"] == EVALUATION_EVENT}
        assert evaluations == {name: getattr(report, name) for name in HEADLINE_SCORES}
        assert all(e["name"] == EVALUATION_EVENT for e in span["events"])  # no content by default
    assert sum(1 for r in records if r.first_token_at_ns is not None) == 1  # the stream
