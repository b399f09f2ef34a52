"""Issue 16, metrics half: OpenTelemetry metric names and attribute keys against the GenAI registry
of the INSTALLED ``opentelemetry-semantic-conventions`` package (never against our own constants),
and no negative histogram bound in either metric system.

Records of every shape (ok, streamed, text completion, error, metadata label, no provider) go
through the real exporters into in-memory sinks; what the sinks hold is checked, not what the
definitions say.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from prometheus_client import CollectorRegistry

from observability.exporters import HISTOGRAMS, MetricLabels, OpenTelemetryMetricsExporter, PrometheusExporter
from tests.export_support import make_record, make_report

OUR_ATTRIBUTES = "llm.confidence."
"""Attribute keys of our own (the issue: names of our own stay under ``llm.confidence.*``)."""


def registry_names(module: Any) -> frozenset[str]:
    """Every ``gen_ai.*`` name a semconv module defines as a constant."""
    return frozenset(value for name, value in vars(module).items()
                     if name.isupper() and isinstance(value, str) and value.startswith("gen_ai."))


GEN_AI_ATTRIBUTES = registry_names(gen_ai_attributes)
GEN_AI_METRICS = registry_names(gen_ai_metrics)


def test_the_installed_registry_has_the_names_this_test_relies_on() -> None:
    # A registry read that found nothing would make every check below pass vacuously.
    assert len(GEN_AI_ATTRIBUTES) > 30 and len(GEN_AI_METRICS) > 3
    assert {"gen_ai.provider.name", "gen_ai.request.model", "gen_ai.operation.name"} <= GEN_AI_ATTRIBUTES
    assert "provider" not in GEN_AI_ATTRIBUTES and "gen_ai.provider" not in GEN_AI_ATTRIBUTES


def records() -> list[Any]:
    streamed = make_record(report=make_report(), first_token_after=0.3)
    completion = make_record(report=make_report(), first_token_after=0.2, kind="llm")
    failed = make_record(status="error", report=None, first_token_after=0.1)
    anonymous = make_record(report=make_report(min_token_probability=3e-6), provider=None, model=None,
                            metadata={"route": "/ask"})
    return [make_record(report=make_report()), streamed, completion, failed, anonymous]


def export_both(prefix: str = "llm") -> tuple[Any, CollectorRegistry]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    registry = CollectorRegistry()
    labels = MetricLabels(["route"])
    exporters = [OpenTelemetryMetricsExporter(meter_provider=provider, prefix=prefix, labels=labels),
                 PrometheusExporter(registry=registry, prefix=prefix, labels=labels)]
    for exporter in exporters:
        exporter.export(records())
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    metrics = [metric for resource in data.resource_metrics for scope in resource.scope_metrics
               for metric in scope.metrics]
    return metrics, registry


@pytest.mark.parametrize("prefix", ["llm", "myapp"])
def test_every_otel_metric_and_attribute_name_is_the_registrys_or_ours(prefix: str) -> None:
    metrics, _ = export_both(prefix)
    names = {metric.name for metric in metrics}
    keys = {key for metric in metrics for point in metric.data.data_points for key in point.attributes or {}}
    foreign_names = {n for n in names if n not in GEN_AI_METRICS and not n.startswith(f"{prefix}.")}
    foreign_keys = {k for k in keys if k not in GEN_AI_ATTRIBUTES and not k.startswith(OUR_ATTRIBUTES)}
    assert not foreign_names, f"metric names neither in the GenAI registry nor {prefix}.*: {foreign_names}"
    assert not foreign_keys, f"attribute keys neither in the GenAI registry nor {OUR_ATTRIBUTES}*: {foreign_keys}"
    # the registry's names are really used: provider and model on every point, TTFC under its name
    for metric in metrics:
        for point in metric.data.data_points:
            assert {"gen_ai.provider.name", "gen_ai.request.model"} <= set(point.attributes or {}), metric.name
    assert gen_ai_metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK in names
    assert {"llm.confidence.status", "llm.confidence.logprobs", "llm.confidence.metadata.route"} <= keys


def test_time_to_first_chunk_is_the_conventions_metric() -> None:
    metrics, _ = export_both()
    [ours] = [m for m in metrics if m.name == gen_ai_metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK]
    # the unit and name the package's own instrument factory uses
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    reference = gen_ai_metrics.create_gen_ai_client_operation_time_to_first_chunk(provider.get_meter("reference"))
    reference.record(1.0, {"gen_ai.operation.name": "chat"})
    data = reader.get_metrics_data()
    assert data is not None
    [theirs] = [m for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics]
    provider.shutdown()
    assert (ours.name, ours.unit) == (theirs.name, theirs.unit) == (ours.name, "s")
    # streamed answers only, whatever their status; the operation name the conventions require
    by_operation = {point.attributes["gen_ai.operation.name"]: point.count for point in ours.data.data_points}
    assert by_operation == {"chat": 2, "text_completion": 1}
    assert {"chat", "text_completion"} <= {member.value for member in gen_ai_attributes.GenAiOperationNameValues}
    # the spec's bucket advice for this metric (the semconv package does not carry advice)
    [point] = [p for p in ours.data.data_points if p.attributes["gen_ai.operation.name"] == "text_completion"]
    assert tuple(point.explicit_bounds) == (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24,
                                           20.48, 40.96, 81.92)


def prometheus_bounds(registry: CollectorRegistry) -> dict[str, set[float]]:
    """Histogram family name → the ``le`` bounds of its series (without +Inf)."""
    found: dict[str, set[float]] = {}
    for family in registry.collect():
        if family.type == "histogram":
            bounds = found.setdefault(family.name, set())
            for sample in family.samples:
                if sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf":
                    bounds.add(float(sample.labels["le"]))
    return found


def test_no_histogram_has_a_negative_bound_and_both_systems_share_the_buckets() -> None:
    metrics, registry = export_both()
    prometheus = prometheus_bounds(registry)
    otel = {m.name: {tuple(p.explicit_bounds) for p in m.data.data_points}
            for m in metrics if m.data.data_points and isinstance(m.data.data_points[0], HistogramDataPoint)}
    assert len(prometheus) == len(otel) == len(HISTOGRAMS)
    for definition in HISTOGRAMS:
        [otel_bounds] = otel[definition.otel_instrument_name("llm")]
        assert prometheus[f"llm_{definition.name}"] == set(otel_bounds), definition.name
        assert list(otel_bounds) == sorted(otel_bounds) and min(otel_bounds) >= 0, definition.name
        assert all(math.isfinite(bound) for bound in otel_bounds)


def test_one_histogram_per_signal_with_buckets_for_its_range() -> None:
    names = {definition.name for definition in HISTOGRAMS}
    # mean logprob and perplexity are monotone transforms of sequence probability: not histograms of their own
    assert not {name for name in names if "logprob" in name or "perplexity" in name}
    by_name = {definition.name: definition.buckets for definition in HISTOGRAMS}
    sequence = by_name["response_sequence_probability"]
    assert sequence[-1] == 1.0 and sequence[0] <= 0.01 and {0.9, 0.95, 0.99, 0.999} <= set(sequence)
    minimum = by_name["response_min_token_probability"]
    assert minimum[0] == 1e-6 and minimum[-1] == 1.0
    assert {1e-6, 1e-5, 1e-4, 1e-3, 0.01} <= set(minimum)  # one bound per decade below 0.01
    for definition in HISTOGRAMS:
        assert min(definition.buckets) >= 0, definition.name
        assert list(definition.buckets) == sorted(set(definition.buckets)), definition.name
