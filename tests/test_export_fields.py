"""Issue 18 (export side) and the rest of issue 16's span half: per-field span events and the
per-field histogram, the provider-name table, the evaluation label, the content switch under
``OTEL_SEMCONV_STABILITY_OPT_IN``. Records are built by hand (``json_record``: real
``field_confidence`` over hand-made tokens); what the in-memory sinks hold is checked.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes

from observability.exporters import (
    MetricLabels,
    OpenTelemetryMetricsExporter,
    OpenTelemetryTracingExporter,
    PrometheusExporter,
)
from observability.exporters._content import CAPTURE_CONTENT_ENV, SEMCONV_STABILITY_ENV
from observability.exporters._definitions import MIN_TOKEN_PROBABILITY_BUCKETS
from observability.exporters._otel_spans import FIELD_EVENT, score_label
from observability.exporters._providers import PROVIDER_NAMES, provider_name
from tests.export_support import OtelSinks, json_record, make_record, make_report

PIECES = ['{"name', '": "', 'Zebedee', '", "age": ', '8675309', ', "tags": ["', 'blue', '", "green"]}']
VALUES = ("Zebedee", "8675309", "blue", "green")
PATHS = ("/name", "/age", "/tags/0", "/tags/1")


def spans_for(records: list[Any], capture: bool) -> list[Any]:
    sinks = OtelSinks()
    exporter = OpenTelemetryTracingExporter(tracer_provider=sinks.tracer_provider, capture_content=capture)
    exporter.export(records)
    spans = sinks.spans()
    sinks.shutdown()
    return spans


def field_events(span: Any) -> list[dict[str, Any]]:
    return [dict(event.attributes or {}) for event in span.events if event.name == FIELD_EVENT]


def test_one_field_event_per_leaf_with_its_figures_and_no_text_by_default() -> None:
    record = json_record(PIECES)
    [span] = spans_for([record], capture=False)
    events = field_events(span)
    assert record.report is not None
    fields = record.report.fields
    assert [e["llm.confidence.field.path"] for e in events] == list(PATHS) == [f.path for f in fields]
    assert span.attributes["llm.confidence.field_count"] == 4
    for event, field in zip(events, fields, strict=True):
        assert event["llm.confidence.field.start"] == field.start
        assert event["llm.confidence.field.end"] == field.end
        assert event["llm.confidence.field.token_count"] == field.token_count
        assert event["llm.confidence.field.sequence_logprob"] == field.sequence_logprob
        assert event["llm.confidence.field.mean_logprob"] == field.mean_logprob
        assert event["llm.confidence.field.min_token_probability"] == field.min_token_probability
        assert list(event["llm.confidence.field.alternative_probabilities"]) == [p for _, p in field.alternatives]
        assert "llm.confidence.field.value" not in event and "llm.confidence.field.alternatives" not in event
    # independent check: '"Zebedee"' (with its quotes) overlaps pieces 2-4, logprobs -0.10, -0.15, -0.20
    assert events[0]["llm.confidence.field.token_count"] == 3
    assert events[0]["llm.confidence.field.min_token_probability"] == pytest.approx(math.exp(-0.20))
    assert events[0]["llm.confidence.field.sequence_logprob"] == pytest.approx(-0.45)
    blob = repr([(e.name, dict(e.attributes or {})) for e in span.events]) + repr(dict(span.attributes or {}))
    assert not [value for value in VALUES if value in blob]  # no value text anywhere
    assert "zqx" not in blob  # nor the alternatives' text


def test_a_key_written_twice_is_marked_on_its_field_event() -> None:
    # {"age": 31, "age": 7}: a JSON parser keeps 7, so that is the one field, marked as a duplicate.
    record = json_record(['{"age": ', '31', ', "age": ', '7', ', "name": ', '"x"', '}'])
    [span] = spans_for([record], capture=False)
    events = field_events(span)
    assert [e["llm.confidence.field.path"] for e in events] == ["/age", "/name"]
    assert events[0]["llm.confidence.field.duplicate_key"] is True
    assert events[0]["llm.confidence.field.token_count"] == 1  # the kept "7", not "31"
    assert "llm.confidence.field.duplicate_key" not in events[1]  # only set when true


def test_value_and_alternatives_text_only_with_capture_on() -> None:
    record = json_record(PIECES)
    [span] = spans_for([record], capture=True)
    events = field_events(span)
    assert [e["llm.confidence.field.value"] for e in events] == ['"Zebedee"', "8675309", '"blue"', '"green"']
    assert record.text is not None
    assert [e["llm.confidence.field.value"] for e in events] == [record.text[s:e] for s, e in
                                                                 ((f["llm.confidence.field.start"],
                                                                   f["llm.confidence.field.end"]) for f in events)]
    assert list(events[0]["llm.confidence.field.alternatives"]) == ["Zebedee", "zqx2"]


def test_field_events_are_bounded_to_the_least_confident() -> None:
    pieces = ["["] + [f"{i}, " for i in range(149)] + ["149]"]
    logprobs = [-0.01] * len(pieces)
    logprobs[77] = -3.0  # the value 76 is the least confident
    record = json_record(pieces, logprobs)
    [span] = spans_for([record], capture=False)
    events = field_events(span)
    assert span.attributes["llm.confidence.field_count"] == 150
    assert len(events) == 100
    paths = [e["llm.confidence.field.path"] for e in events]
    assert "/76" in paths and paths == sorted(paths, key=lambda p: int(p[1:]))  # document order kept


def metric_exporters(sinks: OtelSinks, labels: MetricLabels) -> list[Any]:
    return [OpenTelemetryMetricsExporter(meter_provider=sinks.meter_provider, labels=labels),
            PrometheusExporter(registry=sinks.registry, labels=labels)]


def test_field_histogram_only_for_allowlisted_paths_in_both_systems() -> None:
    sinks = OtelSinks()
    labels = MetricLabels(field_paths=("/name", "/tags/*"))
    record = json_record(PIECES)
    for exporter in metric_exporters(sinks, labels):
        exporter.export([record])
        exporter.export([json_record(PIECES, status="error")])  # failed runs are not observed
    assert record.report is not None
    by_path = {f.path: f.min_token_probability for f in record.report.fields}
    prometheus = {(s.labels["path"]): s.value for f in sinks.registry.collect() for s in f.samples
                  if s.name == "llm_field_min_token_probability_sum"}
    assert prometheus == {p: by_path[p] for p in ("/name", "/tags/0", "/tags/1")}  # not /age
    points = sinks.metric_points("llm.field.min_token_probability")
    otel = {p.attributes["llm.confidence.field.path"]: p.sum for p in points}
    assert otel == prometheus
    assert {p.attributes["gen_ai.provider.name"] for p in points} == {"openai"}
    for point in points:
        assert tuple(point.explicit_bounds) == MIN_TOKEN_PROBABILITY_BUCKETS
    bounds = {float(s.labels["le"]) for f in sinks.registry.collect() for s in f.samples
              if s.name == "llm_field_min_token_probability_bucket" and s.labels["le"] != "+Inf"}
    assert bounds == set(MIN_TOKEN_PROBABILITY_BUCKETS)
    sinks.shutdown()


def test_no_field_histogram_without_an_allowlist() -> None:
    sinks = OtelSinks()
    for exporter in metric_exporters(sinks, MetricLabels()):
        exporter.export([json_record(PIECES)])
    assert not [f for f in sinks.registry.collect() if "field" in f.name]
    assert "llm.field.min_token_probability" not in sinks.all_metric_points()
    sinks.shutdown()


def test_allowlisted_paths_beyond_the_cap_read_other() -> None:
    sinks = OtelSinks()
    labels = MetricLabels(field_paths=("/*",), max_label_values=3)
    pieces = ["["] + [f"{i}, " for i in range(9)] + ["9]"]
    for exporter in metric_exporters(sinks, labels):
        exporter.export([json_record(pieces)])
    counts = {s.labels["path"]: s.value for f in sinks.registry.collect() for s in f.samples
              if s.name == "llm_field_min_token_probability_count"}
    assert counts == {"/0": 1, "/1": 1, "/2": 1, "other": 7}
    otel = {p.attributes["llm.confidence.field.path"]: p.count
            for p in sinks.metric_points("llm.field.min_token_probability")}
    assert otel == counts
    sinks.shutdown()


def test_field_paths_are_checked() -> None:
    with pytest.raises(TypeError):
        MetricLabels(field_paths="/name")
    with pytest.raises(ValueError, match="JSON Pointer"):
        MetricLabels(field_paths=("name",))
    with pytest.raises(ValueError, match="path"):
        MetricLabels(["path"], field_paths=("/name",))
    MetricLabels(["path"])  # a metadata key "path" is fine when no field is observed


REGISTRY_PROVIDERS = {member.value for member in gen_ai_attributes.GenAiProviderNameValues}


@pytest.mark.parametrize(("ls_provider", "expected"), [
    pytest.param("openai", "openai", id="openai"),
    pytest.param("azure", "azure.ai.openai", id="azure"),
    pytest.param("google_vertexai", "gcp.vertex_ai", id="google_vertexai"),
    pytest.param("google_genai", "gcp.gen_ai", id="google_genai"),
    pytest.param("bedrock", "aws.bedrock", id="bedrock"),
    pytest.param("amazon_bedrock", "aws.bedrock", id="amazon_bedrock"),
    pytest.param("mistral", "mistral_ai", id="mistral"),
    pytest.param("mistralai", "mistral_ai", id="mistralai"),
    pytest.param("anthropic", "anthropic", id="anthropic"),
    pytest.param("groq", "groq", id="groq"),
    pytest.param("deepseek", "deepseek", id="deepseek"),
    pytest.param("xai", "x_ai", id="xai"),
    pytest.param("ibm", "ibm.watsonx.ai", id="ibm"),
    pytest.param("cohere", "cohere", id="cohere"),
    pytest.param("perplexity", "perplexity", id="perplexity"),
    pytest.param("Azure", "azure.ai.openai", id="any-case"),
    pytest.param("ollama", "ollama", id="ollama-kept"),
    pytest.param("fireworks", "fireworks", id="fireworks-kept"),
    pytest.param("Together_AI", "Together_AI", id="unknown-kept-as-given"),
    pytest.param(None, "unknown", id="missing"),
])
def test_provider_name_on_span_and_metric_points_agree(ls_provider: str | None, expected: str) -> None:
    assert provider_name(ls_provider) == expected
    if ls_provider and ls_provider.lower() in PROVIDER_NAMES:
        assert expected in REGISTRY_PROVIDERS  # every mapped value is a registry member
    sinks = OtelSinks()
    labels = MetricLabels()
    record = make_record(report=make_report(), provider=ls_provider)
    OpenTelemetryTracingExporter(tracer_provider=sinks.tracer_provider).export([record])
    for exporter in metric_exporters(sinks, labels):
        exporter.export([record])
    [span] = sinks.spans()
    assert span.attributes is not None and span.attributes["gen_ai.provider.name"] == expected
    assert {p.attributes["gen_ai.provider.name"] for p in sinks.metric_points("llm.responses")} == {expected}
    assert sinks.sample("llm_responses_total", provider=expected) == 1
    sinks.shutdown()


def test_every_registry_provider_is_reachable_or_deliberately_not() -> None:
    # gcp.gemini and azure.ai.inference have no LangChain ls_provider spelling we know of.
    assert REGISTRY_PROVIDERS - set(PROVIDER_NAMES.values()) == {"gcp.gemini", "azure.ai.inference"}


@pytest.mark.parametrize(("name", "value", "label"), [
    ("sequence_probability", 0.49, "low"), ("sequence_probability", 0.5, "high"),
    ("min_token_probability", 1e-4, "low"), ("min_token_probability", 0.9, "high"),
    ("low_confidence_ratio", 0.0, "high"), ("low_confidence_ratio", 0.5, "high"),
    ("low_confidence_ratio", 0.51, "low"),
])
def test_score_label_by_the_threshold(name: str, value: float, label: str) -> None:
    assert score_label(name, value, 0.5) == label


def test_evaluation_events_carry_label_and_response_id() -> None:
    record = make_record(report=make_report(sequence_probability=0.3, min_token_probability=0.7,
                                            low_confidence_ratio=0.0), response_id="chatcmpl-xyz")
    [span] = spans_for([record], capture=False)
    found = {e.attributes["gen_ai.evaluation.name"]: (e.attributes["gen_ai.evaluation.score.label"],
                                                      e.attributes["gen_ai.response.id"])
             for e in span.events if e.name == "gen_ai.evaluation.result"}
    assert found == {"sequence_probability": ("low", "chatcmpl-xyz"), "min_token_probability": ("high", "chatcmpl-xyz"),
                     "low_confidence_ratio": ("high", "chatcmpl-xyz")}
    [span] = spans_for([make_record(report=make_report())], capture=False)
    assert not [e for e in span.events if "gen_ai.response.id" in (e.attributes or {})]  # unknown: left out


@pytest.mark.parametrize(("opt_in", "value", "captured", "warns"), [
    (None, "true", True, False),
    (None, "SPAN_ONLY", False, True),
    ("gen_ai_latest_experimental", "SPAN_ONLY", True, False),
    ("http, gen_ai_latest_experimental", "span_and_event", True, False),
    ("gen_ai_latest_experimental", "EVENT_ONLY", False, False),
    ("gen_ai_latest_experimental", "NO_CONTENT", False, False),
    ("gen_ai_latest_experimental", None, False, False),
    ("gen_ai_latest_experimental", "true", False, True),
    ("database", "true", True, False),
])
def test_capture_variable_follows_the_stability_opt_in(monkeypatch: pytest.MonkeyPatch, caplog: Any,
                                                         opt_in: str | None, value: str | None,
                                                         captured: bool, warns: bool) -> None:
    for name, set_to in ((SEMCONV_STABILITY_ENV, opt_in), (CAPTURE_CONTENT_ENV, value)):
        if set_to is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, set_to)
    with caplog.at_level(logging.WARNING, logger="observability"):
        exporter = OpenTelemetryTracingExporter()
    assert exporter.capture_content is captured
    assert (CAPTURE_CONTENT_ENV in caplog.text) is warns
