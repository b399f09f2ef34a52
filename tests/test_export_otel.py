"""OpenTelemetry spans and metrics from real model calls, read back from the SDK's in-memory sinks.

Expected values: the records the handler gave ``on_report`` and figures recomputed here from the
records' raw tokens; never numbers read back from the exporter itself.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import openai
import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode
from opentelemetry.util.types import AnyValue
from pydantic import SecretStr

from observability import ConfidenceCallbackHandler, ResponseRecord, RunStart
from observability.demo.model_server import MODEL_NAME
from observability.demo.process import free_port
from observability.exporters import HISTOGRAMS, Exporter, OpenTelemetryMetricsExporter, OpenTelemetryTracingExporter
from observability.exporters._content import CAPTURE_CONTENT_ENV
from observability.exporters._otel_spans import EVALUATION_EVENT, HEADLINE_SCORES, LOW_CONFIDENCE_TOKEN_EVENT
from tests.export_support import SDK_REPORT_FIELDS, OtelSinks, make_record, make_report

QUESTION = "What is the capital of France? Answer in one sentence."


@pytest.fixture
def otel() -> Iterator[OtelSinks]:
    made = OtelSinks()
    yield made
    made.shutdown()


def handler_for(otel: OtelSinks, **span_options: Any) -> tuple[ConfidenceCallbackHandler, list[ResponseRecord]]:
    records: list[ResponseRecord] = []
    threshold = span_options.pop("low_confidence_threshold", 0.5)
    exporters: list[Exporter] = [
        OpenTelemetryTracingExporter(tracer_provider=otel.tracer_provider, **span_options),
        OpenTelemetryMetricsExporter(meter_provider=otel.meter_provider),
    ]
    return (ConfidenceCallbackHandler(exporters=exporters, on_report=records.append,
                                      low_confidence_threshold=threshold), records)


def attributes(item: ReadableSpan | Event) -> Mapping[str, AnyValue]:
    """A finished SDK span's or event's attributes: typed Optional by the SDK, but always a mapping here."""
    assert item.attributes is not None
    return item.attributes


def model_spans(otel: OtelSinks) -> list[Any]:
    return [s for s in otel.spans() if s.kind == SpanKind.CLIENT]


@pytest.mark.real_model
def test_chat_span_joins_the_app_trace_with_exact_attributes(otel: OtelSinks, chat_model: Any) -> None:
    handler, records = handler_for(otel)
    llm = chat_model().bind(logprobs=True, top_logprobs=3)
    with otel.tracer_provider.get_tracer("app").start_as_current_span("GET /ask") as app_span:
        message = llm.invoke(QUESTION, config={"callbacks": [handler]})
    [record] = records
    [span] = model_spans(otel)
    report = record.report
    assert report is not None and report.token_count > 0
    assert span.name == f"chat {MODEL_NAME}" and span.kind == SpanKind.CLIENT
    assert span.parent is not None and span.parent.span_id == app_span.get_span_context().span_id
    assert span.context.trace_id == app_span.get_span_context().trace_id
    assert (span.start_time, span.end_time) == (record.start.started_at_ns, record.ended_at_ns)
    assert span.status.status_code == StatusCode.UNSET
    attrs = dict(span.attributes)
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == MODEL_NAME and attrs["gen_ai.response.model"] == record.response_model
    assert attrs["gen_ai.request.temperature"] == 0.0 and attrs["gen_ai.request.max_tokens"] == 24
    assert attrs["gen_ai.response.id"] == record.response_id and record.response_id
    assert attrs["gen_ai.response.finish_reasons"] == (record.finish_reason,)
    assert record.input_tokens is not None and record.output_tokens is not None
    assert attrs["gen_ai.usage.input_tokens"] == record.input_tokens > 0
    assert attrs["gen_ai.usage.output_tokens"] == record.output_tokens > 0
    assert attrs["llm.confidence.status"] == "ok" and attrs["llm.confidence.logprobs"] == "present"
    for name in SDK_REPORT_FIELDS:
        assert attrs[f"llm.confidence.{name}"] == getattr(report, name), name
    assert attrs["llm.confidence.token_count"] == report.token_count == len(record.tokens)
    assert attrs["llm.confidence.low_confidence_span_count"] == len(report.low_confidence_spans)
    # recomputed from the raw tokens, independently of the scorer
    lps = [t.logprob for t in record.tokens]
    assert attrs["llm.confidence.sequence_probability"] == pytest.approx(math.exp(sum(lps) / len(lps)), rel=1e-9)
    assert attrs["llm.confidence.min_token_probability"] == pytest.approx(math.exp(min(lps)), rel=1e-9)
    evaluations = {e.attributes["gen_ai.evaluation.name"]: e.attributes["gen_ai.evaluation.score.value"]
                   for e in span.events if e.name == EVALUATION_EVENT}
    assert evaluations == {name: getattr(report, name) for name in HEADLINE_SCORES}
    # privacy by default: no token or response text anywhere on the span
    assert not [e for e in span.events if e.name == LOW_CONFIDENCE_TOKEN_EVENT]
    texts = [str(v) for v in attrs.values()] + [str(v) for e in span.events for v in e.attributes.values()]
    assert message.content and not any(str(message.content) in t for t in texts)
    assert not any(t.token and len(t.token) > 3 and t.token in " ".join(texts) for t in record.tokens)
    assert record.trace == {"trace_id": format(span.context.trace_id, "032x"),
                            "span_id": format(span.context.span_id, "016x")}


@pytest.mark.real_model
def test_content_events_only_when_opted_in(otel: OtelSinks, chat_model: Any) -> None:
    handler, records = handler_for(otel, capture_content=True, low_confidence_threshold=0.95)
    chat_model(temperature=1.0, seed=7).bind(logprobs=True, top_logprobs=3).invoke(
        "Invent a name for a new colour.", config={"callbacks": [handler]})
    [record] = records
    [span] = model_spans(otel)
    low = [(i, t) for i, t in enumerate(record.tokens) if math.exp(t.logprob) < 0.95]
    assert low, "a temperature-1 answer should have tokens below p=0.95"
    events = [e for e in span.events if e.name == LOW_CONFIDENCE_TOKEN_EVENT]
    assert [e.attributes["llm.confidence.token.index"] for e in events] == [i for i, _ in low[:100]]
    for event, (_, token) in zip(events, low, strict=False):
        assert event.attributes["llm.confidence.token.text"] == token.token
        assert event.attributes["llm.confidence.token.probability"] == pytest.approx(math.exp(token.logprob))
        assert list(event.attributes["llm.confidence.token.alternatives"]) == [a or "" for a, _ in token.top_logprobs]
        assert list(event.attributes["llm.confidence.token.alternative_probabilities"]) == pytest.approx(
            [math.exp(lp) for _, lp in token.top_logprobs])


@pytest.mark.parametrize(("value", "expected", "warns"), [
    pytest.param("TRUE", True, False, id="true-any-case"),
    pytest.param("false", False, False, id="false"),
    pytest.param("yes please", False, True, id="bad-value-warns"),
])
def test_content_capture_from_the_environment(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                              value: str, expected: bool, warns: bool) -> None:
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, value)
    with caplog.at_level(logging.WARNING, logger="observability"):
        exporter = OpenTelemetryTracingExporter(tracer_provider=NoOpTracerProvider())
    assert exporter.capture_content is expected
    assert (CAPTURE_CONTENT_ENV in caplog.text) is warns
    assert OpenTelemetryTracingExporter(tracer_provider=NoOpTracerProvider(), capture_content=False).capture_content \
        is False
    with pytest.raises(TypeError, match="capture_content"):
        OpenTelemetryTracingExporter(capture_content="yes")  # type: ignore[arg-type]


@pytest.mark.real_model
def test_failed_call_is_an_error_span_and_cancelled_stream_is_not(otel: OtelSinks, chat_model: Any) -> None:
    handler, records = handler_for(otel)
    dead = chat_model(base_url=f"http://127.0.0.1:{free_port()}/v1", timeout=5).bind(logprobs=True)
    with pytest.raises(openai.APIConnectionError):
        dead.invoke("hi", config={"callbacks": [handler]})
    stream = chat_model(max_tokens=40).bind(logprobs=True, top_logprobs=2).stream(
        "Write a long story about a dragon.", config={"callbacks": [handler]})
    for index, _ in enumerate(stream):
        if index == 4:
            break
    stream.close()
    failed, cancelled = model_spans(otel)
    assert [r.status for r in records] == ["error", "cancelled"]
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.attributes["error.type"] == records[0].error_type
    assert str(records[0].error_type).endswith("ConnectionError")  # langchain-openai's APIConnectionError subclass
    assert failed.attributes["llm.confidence.status"] == "error"
    assert cancelled.status.status_code == StatusCode.UNSET and "error.type" not in cancelled.attributes
    assert cancelled.attributes["llm.confidence.status"] == "cancelled"
    assert cancelled.attributes["llm.confidence.token_count"] == records[1].report.token_count  # type: ignore[union-attr]


@pytest.mark.real_model
def test_run_tree_spans_when_asked(otel: OtelSinks, chat_model: Any) -> None:
    chain = (ChatPromptTemplate.from_messages([("human", "Translate to French: {text}")])
             | chat_model(max_tokens=12).bind(logprobs=True) | StrOutputParser())
    handler, _ = handler_for(otel)
    chain.invoke({"text": "good morning"}, config={"callbacks": [handler]})
    assert [s.kind for s in otel.spans()] == [SpanKind.CLIENT]  # default: model spans only
    otel.span_exporter.clear()
    handler, records = handler_for(otel, trace_run_tree=True)
    chain.invoke({"text": "good morning"}, config={"callbacks": [handler]})
    spans = {s.name: s for s in otel.spans()}
    sequence = spans["RunnableSequence"]
    model = spans[f"chat {MODEL_NAME}"]
    assert sequence.parent is None and attributes(sequence)["llm.confidence.run.kind"] == "chain"
    assert model.parent is not None and model.parent.span_id == sequence.context.span_id
    prompt = spans["ChatPromptTemplate"]
    assert prompt.parent is not None and prompt.parent.span_id == sequence.context.span_id
    assert {s.context.trace_id for s in spans.values()} == {sequence.context.trace_id}
    assert sequence.start_time is not None and model.start_time is not None
    assert model.end_time is not None and sequence.end_time is not None
    assert sequence.start_time <= model.start_time <= model.end_time <= sequence.end_time
    assert records[0].trace["span_id"] == format(model.context.span_id, "016x")
    assert handler.exporters[0].open_runs == 0  # type: ignore[attr-defined]


@pytest.mark.real_model
def test_streamed_text_completion_span_and_metrics(otel: OtelSinks, local_model: Any) -> None:
    from langchain_openai import OpenAI

    handler, records = handler_for(otel)
    llm = OpenAI(model=MODEL_NAME, base_url=local_model.base_url, api_key=SecretStr("unused"), temperature=0,
                 max_tokens=8, logprobs=3, max_retries=0)
    "".join(llm.stream("The capital of France is", config={"callbacks": [handler]}))
    [record] = records
    [span] = model_spans(otel)
    assert span.name == f"text_completion {MODEL_NAME}"
    assert span.attributes["gen_ai.operation.name"] == "text_completion"
    [ttft] = otel.metric_points("gen_ai.client.operation.time_to_first_chunk")
    assert ttft.count == 1 and ttft.sum == pytest.approx(record.time_to_first_token_seconds)
    assert 0 < ttft.sum <= record.duration_seconds
    assert ttft.attributes == {"gen_ai.operation.name": "text_completion", "gen_ai.provider.name": "openai",
                               "gen_ai.request.model": MODEL_NAME}


@pytest.mark.real_model
def test_otel_metrics_match_the_records_and_link_to_spans(otel: OtelSinks, chat_model: Any) -> None:
    handler, records = handler_for(otel)
    llm = chat_model(max_tokens=12).bind(logprobs=True, top_logprobs=2)
    for question in ("Say hello.", "Name a colour.", "Count to three."):
        llm.invoke(question, config={"callbacks": [handler]})
    chat_model(max_tokens=4).invoke("hi", config={"callbacks": [handler]})  # no logprobs asked
    assert len(records) == 4
    scored = [r for r in records if r.report is not None]
    collected = otel.all_metric_points()  # one collection: the SDK resets exemplars on each
    assert "gen_ai.client.operation.time_to_first_chunk" not in collected  # no streams here
    for definition in (d for d in HISTOGRAMS if not d.semconv):
        [point] = collected[f"llm.{definition.otel_name}"]
        values = [value for value in (definition.value(r) for r in scored) if value is not None]
        bounds = definition.buckets
        assert point.attributes == {"gen_ai.provider.name": "openai", "gen_ai.request.model": MODEL_NAME}
        assert point.count == len(values) == 3 and point.sum == pytest.approx(sum(values))
        assert tuple(point.explicit_bounds) == bounds and min(values) >= 0
        expected_counts = [sum(1 for v in values if (i == 0 or v > bounds[i - 1])
                               and (i == len(bounds) or v <= bounds[i])) for i in range(len(bounds) + 1)]
        assert list(point.bucket_counts) == expected_counts, definition.name
        span_ids = {r.trace["span_id"] for r in scored}
        assert point.exemplars and {format(e.span_id, "016x") for e in point.exemplars} <= span_ids
    counts = {(p.attributes["llm.confidence.status"], p.attributes["llm.confidence.logprobs"]): p.value
              for p in collected["llm.responses"]}
    assert counts == {("ok", "present"): 3, ("ok", "not_requested"): 1}


def test_no_tracer_provider_means_no_span_and_no_trace_ids() -> None:
    exporter = OpenTelemetryTracingExporter(tracer_provider=NoOpTracerProvider())
    record = make_record(report=make_report())
    exporter.on_run_start(record.start)
    exporter.export([record])
    assert record.trace == {} and exporter.open_runs == 0


def test_bad_values_never_reach_attributes_or_histograms(otel: OtelSinks) -> None:
    spans = OpenTelemetryTracingExporter(tracer_provider=otel.tracer_provider)
    metrics = OpenTelemetryMetricsExporter(meter_provider=otel.meter_provider)
    record = make_record(report=make_report(perplexity=math.inf, mean_logprob=math.nan, mean_top_margin=None),
                         provider=None, model=None)
    spans.export([record])
    metrics.export([record])
    [span] = otel.spans()
    attrs = attributes(span)
    assert record.report is not None
    assert span.name == "chat" and "llm.confidence.perplexity" not in attrs
    assert "llm.confidence.mean_logprob" not in attrs
    assert "llm.confidence.mean_top_margin" not in attrs
    assert attrs["llm.confidence.sequence_probability"] == record.report.sequence_probability
    collected = otel.all_metric_points()
    assert "llm.response.mean_top_margin" not in collected  # its one value was None
    [point] = collected["llm.response.sequence_probability"]
    assert point.attributes == {"gen_ai.provider.name": "unknown", "gen_ai.request.model": "unknown"}


def test_per_run_state_is_bounded_and_popped() -> None:
    exporter = OpenTelemetryTracingExporter(tracer_provider=NoOpTracerProvider(), trace_run_tree=True, max_open_runs=2)
    starts = [RunStart(run_id=uuid.uuid4(), parent_run_id=None, kind=kind, name="x", started_at_ns=1)
              for kind in ("chat", "chat", "chat", "chain", "chain", "chain")]
    for start in starts:
        exporter.on_run_start(start)
    assert exporter.open_runs == 4 and exporter.dropped_runs == 2
    for start in starts:
        exporter.on_run_end(start.run_id, 2, None)
    assert exporter.open_runs == 0


def test_several_choices_make_one_span_with_per_choice_events(otel: OtelSinks) -> None:
    exporter = OpenTelemetryTracingExporter(tracer_provider=otel.tracer_provider)
    first = make_record(report=make_report(sequence_probability=0.9))
    second = ResponseRecord(start=first.start, status="ok", logprobs="present", choice_index=1,
                            report=make_report(sequence_probability=0.4), ended_at_ns=first.ended_at_ns + 5)
    exporter.export([first, second])
    [span] = otel.spans()
    assert attributes(span)["gen_ai.request.choice.count"] == 2 and span.end_time == second.ended_at_ns
    scores = [(attributes(e)["llm.confidence.choice_index"], attributes(e)["gen_ai.evaluation.score.value"])
              for e in span.events if attributes(e)["gen_ai.evaluation.name"] == "sequence_probability"]
    assert scores == [(0, 0.9), (1, 0.4)]
    assert first.trace == second.trace and first.trace["span_id"] == format(span.context.span_id, "016x")
