"""Prometheus metrics in a fresh ``CollectorRegistry``: values, buckets, exemplars, sharing, collisions.

Expected values are recomputed from the records ``on_report`` received; exemplars are read back
by parsing the registry's OpenMetrics exposition with prometheus_client's own parser.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.openmetrics.exposition import generate_latest

from observability import ConfidenceCallbackHandler, ResponseRecord
from observability.demo.model_server import MODEL_NAME
from observability.exporters import (
    HISTOGRAMS,
    MetricLabels,
    OpenTelemetryTracingExporter,
    PrometheusExporter,
    default_exporters,
)
from tests.export_support import OtelSinks, make_record, make_report

LABELS = {"provider": "openai", "model": MODEL_NAME}


_EXEMPLAR_LINE = re.compile(r'^(?P<name>[a-zA-Z_:][\w:]*)\{(?P<labels>[^}]*)\} \S+ # \{(?P<exemplar>[^}]*)\}')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def exemplars(registry: CollectorRegistry) -> dict[tuple[str, str], dict[str, str]]:
    """(sample name, le) → exemplar labels, read from the OpenMetrics text with a small parser of
    our own (one line per sample with its exemplar; ``strict_families`` checks the whole text)."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for line in generate_latest(registry).decode().splitlines():
        match = _EXEMPLAR_LINE.match(line)
        if match:
            labels = dict(_LABEL.findall(match["labels"]))
            found[(match["name"], labels.get("le", ""))] = dict(_LABEL.findall(match["exemplar"]))
    return found


@pytest.mark.real_model
def test_histograms_and_counter_match_the_records(chat_model: Any) -> None:
    registry = CollectorRegistry()
    otel = OtelSinks()
    records: list[ResponseRecord] = []
    handler = ConfidenceCallbackHandler(
        exporters=default_exporters(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider,
                                    registry=registry),
        on_report=records.append)
    llm = chat_model(max_tokens=12).bind(logprobs=True, top_logprobs=3)
    for question in ("Say hello.", "Name a colour.", "Count to three.", "Name a fruit."):
        llm.invoke(question, config={"callbacks": [handler]})
    "".join(str(c.content) for c in llm.stream("Name an animal.", config={"callbacks": [handler]}))
    chat_model(max_tokens=4).invoke("hi", config={"callbacks": [handler]})
    scored = [r for r in records if r.report is not None]
    assert len(records) == 6 and len(scored) == 5 and not handler.errors

    for definition in HISTOGRAMS:
        name = f"llm_{definition.name}"
        values = [v for v in (definition.value(r) for r in records if r.status == "ok") if v is not None]
        if definition.name == "time_to_first_token_seconds":
            assert len(values) == 1  # the one stream
        else:
            assert len(values) == 5
        assert registry.get_sample_value(f"{name}_count", LABELS) == len(values)
        # every histogram has a _sum: prometheus_client drops it only for negative buckets
        assert registry.get_sample_value(f"{name}_sum", LABELS) == pytest.approx(sum(values))
        for bound in definition.buckets:
            expected_count = sum(1 for v in values if v <= bound)
            assert registry.get_sample_value(f"{name}_bucket", {**LABELS, "le": _le(bound)}) == expected_count
        assert registry.get_sample_value(f"{name}_bucket", {**LABELS, "le": "+Inf"}) == len(values)

    def total(status: str, logprobs: str) -> float | None:
        return registry.get_sample_value("llm_responses_total", {**LABELS, "status": status, "logprobs": logprobs})

    assert (total("ok", "present"), total("ok", "not_requested")) == (5, 1)

    # each bucket's exemplar is the last response observed in it (the first bucket whose bound
    # holds the value): its span's ids
    found = exemplars(registry)
    for definition in HISTOGRAMS:
        expected: dict[tuple[str, str], dict[str, str]] = {}
        for record in records:
            value = definition.value(record) if record.status == "ok" else None
            if value is not None:
                bound = next((b for b in definition.buckets if value <= b), math.inf)
                expected[(f"llm_{definition.name}_bucket", _le(bound))] = record.trace
        assert {k: v for k, v in found.items() if k[0] == f"llm_{definition.name}_bucket"} == expected
    span_ids = {format(s.context.span_id, "016x") for s in otel.spans()}
    assert {r.trace["span_id"] for r in records} == span_ids and len(span_ids) == 6
    # prometheus_client's strict OpenMetrics parser (what strict consumers do) accepts the whole text
    families = strict_families(registry)
    assert {f"llm_{d.name}" for d in HISTOGRAMS} <= {name for name, kind in families.items() if kind == "histogram"}
    otel.shutdown()


def strict_families(registry: CollectorRegistry) -> dict[str, str]:
    """Metric family name → type, parsed by prometheus_client's strict OpenMetrics parser."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    return {family.name: family.type
            for family in text_string_to_metric_families(generate_latest(registry).decode())}


def _le(bound: float) -> str:
    from prometheus_client.utils import floatToGoString

    return cast(str, floatToGoString(bound))  # prometheus_client leaves it unannotated


def test_two_handlers_on_one_registry_share_the_metrics() -> None:
    registry = CollectorRegistry()
    first, second = PrometheusExporter(registry=registry), PrometheusExporter(registry=registry)
    first.export([make_record(report=make_report(sequence_probability=0.9))])
    second.export([make_record(report=make_report(sequence_probability=0.3))])
    labels = {"provider": "openai", "model": "m-1"}
    assert registry.get_sample_value("llm_response_sequence_probability_count", labels) == 2
    assert registry.get_sample_value("llm_response_sequence_probability_sum", labels) == pytest.approx(1.2)
    assert first.dropped_metrics == second.dropped_metrics == ()
    other = CollectorRegistry()
    PrometheusExporter(registry=other, prefix="myapp").export([make_record(report=make_report())])
    assert other.get_sample_value("myapp_response_tokens_count", labels) == 1
    assert other.get_sample_value("llm_response_tokens_count", labels) is None


def test_a_foreign_metric_with_our_name_is_dropped_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    Gauge("llm_response_mean_top_margin", "someone else's", registry=registry).set(7)
    with caplog.at_level(logging.WARNING, logger="observability"):
        exporter = PrometheusExporter(registry=registry)
        PrometheusExporter(registry=registry)
    assert exporter.dropped_metrics == ("llm_response_mean_top_margin",)
    assert len([r for r in caplog.records if "llm_response_mean_top_margin" in r.getMessage()]) == 1
    exporter.export([make_record(report=make_report())])
    labels = {"provider": "openai", "model": "m-1"}
    assert registry.get_sample_value("llm_response_mean_top_margin") == 7
    assert registry.get_sample_value("llm_response_sequence_probability_count", labels) == 1


def test_metadata_labels_are_opt_in_and_capped() -> None:
    registry = CollectorRegistry()
    exporter = PrometheusExporter(registry=registry, metadata_labels=["route"], max_label_values=2)
    for route in ("/a", "/b", "/c", "/a", None):
        exporter.export([make_record(report=make_report(), metadata={"route": route, "user": "u1"}, provider=None)])
    def count(route: str) -> float | None:
        return registry.get_sample_value("llm_response_tokens_count",
                                         {"provider": "unknown", "model": "m-1", "route": route})

    assert (count("/a"), count("/b"), count("/c"), count("other"), count("")) == (2, 1, None, 1, 1)
    assert exporter.labels.overflowed == 1
    text = generate_latest(registry).decode()
    assert "user" not in text and "u1" not in text


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"metadata_labels": ["status"]}, "clashes", id="reserved"),
    pytest.param({"metadata_labels": ["my-key"]}, "not a valid label name", id="invalid-name"),
    pytest.param({"metadata_labels": "route"}, "list of keys", id="a-string"),
    pytest.param({"max_label_values": 0}, "positive int", id="cap"),
])
def test_bad_label_options_are_clear_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        MetricLabels(**kwargs)


def test_bad_prefix_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="prefix"):
        PrometheusExporter(registry=CollectorRegistry(), prefix="my-app")


def test_bad_values_are_skipped_and_failed_runs_only_counted() -> None:
    registry = CollectorRegistry()
    exporter = PrometheusExporter(registry=registry)
    exporter.export([
        make_record(report=make_report(min_token_probability=math.nan, mean_top_margin=math.inf,
                                       mean_token_entropy=None)),
        make_record(status="error", report=make_report(), first_token_after=0.25),
    ])
    labels = {"provider": "openai", "model": "m-1"}
    assert registry.get_sample_value("llm_response_min_token_probability_count", labels) is None  # never observed
    assert registry.get_sample_value("llm_response_mean_top_margin_count", labels) is None  # never observed
    assert registry.get_sample_value("llm_response_mean_token_entropy_count", labels) is None  # never observed
    assert registry.get_sample_value("llm_response_sequence_probability_count", labels) == 1
    assert registry.get_sample_value("llm_time_to_first_token_seconds_sum", labels) == 0.25
    assert registry.get_sample_value("llm_responses_total",
                                     {**labels, "status": "error", "logprobs": "present"}) == 1


def test_no_exemplar_without_a_sampled_span() -> None:
    registry = CollectorRegistry()
    from opentelemetry.trace import NoOpTracerProvider

    spans = OpenTelemetryTracingExporter(tracer_provider=NoOpTracerProvider())
    record = make_record(report=make_report())
    spans.export([record])
    PrometheusExporter(registry=registry).export([record])
    assert exemplars(registry) == {}
