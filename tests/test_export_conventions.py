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

from observability.exporters import HISTOGRAMS, Exporter, MetricLabels, OpenTelemetryMetricsExporter, PrometheusExporter
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
    exporters: list[Exporter] = [
        OpenTelemetryMetricsExporter(meter_provider=provider, prefix=prefix, labels=labels),
        PrometheusExporter(registry=registry, prefix=prefix, labels=labels),
    ]
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


# ---- spans (issue 16, span half) -------------------------------------------------------------

SPEC_SOURCE = ("open-telemetry/semantic-conventions-genai model/gen-ai/spans.yaml (span gen_ai.inference.client), "
               "events.yaml (gen_ai.evaluation.result), registry.yaml (types)")
"""The installed semconv package carries names only; types and requirement levels are the spec's."""
SPAN_SPEC: dict[str, tuple[type, str]] = {
    "gen_ai.operation.name": (str, "required"),
    "gen_ai.provider.name": (str, "required"),
    "gen_ai.request.model": (str, "conditionally_required"),  # if available
    "gen_ai.response.model": (str, "recommended"),
    "gen_ai.request.temperature": (float, "recommended"),
    "gen_ai.request.max_tokens": (int, "recommended"),
    "gen_ai.request.choice.count": (int, "conditionally_required"),  # if in the request and != 1
    "gen_ai.request.stream": (bool, "conditionally_required"),  # if and only if the request streams
    "gen_ai.response.id": (str, "recommended"),
    "gen_ai.response.finish_reasons": (tuple, "recommended"),  # string[]
    "gen_ai.response.time_to_first_chunk": (float, "recommended"),  # seconds, if streaming
    "gen_ai.usage.input_tokens": (int, "recommended"),
    "gen_ai.usage.output_tokens": (int, "recommended"),
    "gen_ai.tool.name": (str, "recommended"),  # execute_tool spans
}
EVALUATION_SPEC: dict[str, tuple[type, str]] = {
    "gen_ai.evaluation.name": (str, "required"),
    "gen_ai.evaluation.score.value": (float, "conditionally_required"),
    "gen_ai.evaluation.score.label": (str, "conditionally_required"),
    "gen_ai.response.id": (str, "recommended"),  # when available
}
SPEC_EVENTS = frozenset({"gen_ai.evaluation.result"})
OTHER_REGISTRY_KEYS = frozenset({"error.type"})
KNOWN_OUTSIDE_OUR_NAMESPACE: frozenset[str] = frozenset()
"""None: every name of our own is under llm.confidence.*."""


def replaced_names() -> frozenset[str]:
    """Names the installed registry marks as replaced or removed (not merely moved to the GenAI repo),
    read from the constants' docstrings in the package source."""
    import ast
    import inspect
    from itertools import pairwise

    tree = ast.parse(inspect.getsource(gen_ai_attributes))
    replaced = set()
    for node, following in pairwise(tree.body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Constant)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)):
            doc = str(following.value.value)
            if "Replaced by" in doc or "Removed" in doc:
                replaced.add(str(node.value.value))
    return frozenset(replaced)


def span_records() -> list[list[Any]]:
    """Runs of every shape: plain, streamed with a response id, two choices, failed, anonymous,
    a JSON answer with fields, a text completion."""
    from tests.export_support import json_record

    return [
        [make_record(report=make_report(), response_id="chatcmpl-1", finish_reason="stop")],
        [make_record(report=make_report(), first_token_after=0.25, response_id="chatcmpl-2")],
        [make_record(report=make_report(), response_id="r-3"),
         make_record(report=make_report(sequence_probability=0.2), response_id="r-3")],
        [make_record(status="error", report=None, error_type="TimeoutError")],
        [make_record(report=make_report(), provider=None, model=None)],
        [json_record(['{"name', '": "', 'Ada', '", "age": ', '36', '}'], response_id="r-json")],
        [make_record(report=make_report(), first_token_after=0.1, kind="llm")],
    ]


def exported_spans(capture_content: bool = True) -> list[Any]:
    from observability import RunStart
    from observability.exporters import OpenTelemetryTracingExporter
    from tests.export_support import OtelSinks

    sinks = OtelSinks()
    exporter = OpenTelemetryTracingExporter(tracer_provider=sinks.tracer_provider, capture_content=capture_content,
                                            trace_run_tree=True)
    import time
    import uuid

    tool = RunStart(run_id=uuid.uuid4(), parent_run_id=None, kind="tool", name="search", started_at_ns=time.time_ns())
    exporter.on_run_start(tool)
    exporter.on_run_end(tool.run_id, time.time_ns(), None)
    for run in span_records():
        exporter.export(run)
    spans = sinks.spans()
    sinks.shutdown()
    return spans


def check(attributes: Any, spec: dict[str, tuple[type, str]], where: str) -> list[str]:
    problems = []
    for key, value in attributes.items():
        if key.startswith("gen_ai."):
            if key not in GEN_AI_ATTRIBUTES:
                problems.append(f"{where}: {key} is not in the installed GenAI registry")
            elif key not in spec:
                problems.append(f"{where}: {key} is a registry name the spec does not put here")
            elif not isinstance(value, spec[key][0]) or (spec[key][0] is int and isinstance(value, bool)):
                problems.append(f"{where}: {key}={value!r} is not {spec[key][0].__name__}")
            elif spec[key][0] is tuple and isinstance(value, tuple) and not all(isinstance(v, str) for v in value):
                problems.append(f"{where}: {key} is not a string array")
        elif not (key.startswith(OUR_ATTRIBUTES) or key in OTHER_REGISTRY_KEYS or key in KNOWN_OUTSIDE_OUR_NAMESPACE):
            problems.append(f"{where}: {key} is neither a registry name nor under {OUR_ATTRIBUTES}")
    return problems


@pytest.mark.parametrize("capture_content", [False, True], ids=["default", "capture"])
def test_every_span_attribute_and_event_is_the_registrys_with_its_type_or_ours(capture_content: bool) -> None:
    spans = exported_spans(capture_content)
    problems: list[str] = []
    events = set()
    for span in spans:
        problems += check(span.attributes or {}, SPAN_SPEC, span.name)
        for event in span.events:
            events.add(event.name)
            if event.name in SPEC_EVENTS:
                problems += check(event.attributes or {}, EVALUATION_SPEC, f"{span.name}/{event.name}")
            else:
                assert event.name.startswith(OUR_ATTRIBUTES), event.name
                problems += check(event.attributes or {}, {}, f"{span.name}/{event.name}")
    assert problems == []
    assert {"gen_ai.evaluation.result", "llm.confidence.field"} <= events
    emitted = {key for span in spans for key in (span.attributes or {})}
    emitted |= {key for span in spans for event in span.events for key in (event.attributes or {})}
    replaced = replaced_names()
    assert {"gen_ai.system", "gen_ai.usage.prompt_tokens"} <= replaced  # the docstring read finds them
    assert not emitted & replaced, emitted & replaced
    # the names this issue added are really emitted, so the checks above covered them
    assert {"gen_ai.request.stream", "gen_ai.response.time_to_first_chunk", "gen_ai.evaluation.score.label",
            "gen_ai.request.choice.count", "gen_ai.tool.name"} <= emitted


def test_required_and_conditionally_required_span_attributes() -> None:
    spans = exported_spans()
    model_spans = [s for s in spans if s.kind.name == "CLIENT"]
    assert len(model_spans) == len(span_records())
    for span in model_spans:
        attributes = span.attributes or {}
        for key, (_, level) in SPAN_SPEC.items():
            if level == "required":
                assert key in attributes, (span.name, key)
        streamed = attributes.get("gen_ai.response.time_to_first_chunk") is not None
        # set if and only if the request streamed, and then true
        assert attributes.get("gen_ai.request.stream") is (True if streamed else None), span.name
        assert attributes.get("gen_ai.request.choice.count", 2) >= 2  # never 1
        for event in span.events:
            if event.name == "gen_ai.evaluation.result":
                event_attributes = event.attributes or {}
                assert {"gen_ai.evaluation.name", "gen_ai.evaluation.score.value",
                        "gen_ai.evaluation.score.label"} <= set(event_attributes)
                assert event_attributes["gen_ai.evaluation.score.label"] in ("low", "high")
                if "gen_ai.response.id" in attributes:
                    assert event_attributes["gen_ai.response.id"] == attributes["gen_ai.response.id"]
    streamed_spans = [s for s in model_spans if "gen_ai.request.stream" in (s.attributes or {})]
    assert sorted(s.attributes["gen_ai.response.time_to_first_chunk"] for s in streamed_spans) == [0.1, 0.25]
    [anonymous] = [s for s in model_spans if s.name == "chat"]
    assert anonymous.attributes["gen_ai.provider.name"] == "unknown"


def test_the_operation_names_are_the_registrys_and_one_table() -> None:
    from observability.exporters import _otel_spans
    from observability.exporters._definitions import OPERATION_NAMES

    values = {member.value for member in gen_ai_attributes.GenAiOperationNameValues}
    assert set(OPERATION_NAMES.values()) <= values
    assert vars(_otel_spans)["OPERATION_NAMES"] is OPERATION_NAMES  # imported, not a copy
    assert not [name for name in vars(_otel_spans) if name in ("_OPERATIONS", "OPERATIONS")]
