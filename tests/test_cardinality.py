"""Issue 8.4: adversarial metadata cannot create more label values than the configured cap, in
Prometheus or in OpenTelemetry metrics, and the counts stay exact (overflow goes to ``other``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from uuid import uuid4

from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from observability import ConfidenceCallbackHandler
from observability.testing import InMemoryTelemetry, openai_logprobs

ROUTES = 10_000
CAP = 25


def respond(handler: ConfidenceCallbackHandler, metadata: dict[str, Any], model_name: str = "m") -> None:
    """One model run, as LangChain reports it, without a model: start, end with logprobs."""
    run_id = uuid4()
    handler.on_chat_model_start({}, [["hi"]], run_id=run_id, invocation_params={"logprobs": True},
                                metadata={"ls_provider": "fake", "ls_model_name": model_name, **metadata})
    info = {"logprobs": openai_logprobs([" a"], [-0.2]), "finish_reason": "stop"}
    message = AIMessage(content=" a", response_metadata={"model_name": model_name})
    handler.on_llm_end(LLMResult(generations=[[ChatGeneration(message=message, generation_info=info)]]),
                       run_id=run_id)


def label_values(sinks: InMemoryTelemetry, metric: str, label: str) -> Counter[str]:
    """Prometheus: the value of ``metric`` per value of ``label`` (summed over other labels)."""
    values: Counter[str] = Counter()
    for family in sinks.registry.collect():
        for sample in family.samples:
            if sample.name == metric:
                values[sample.labels[label]] += int(sample.value)
    return values


def otel_attribute_values(sinks: InMemoryTelemetry, metric: str, key: str) -> Counter[str]:
    values: Counter[str] = Counter()
    data = sinks.metrics()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for found in scope.metrics:
                if found.name == metric:
                    for point in found.data.data_points:
                        values[str((point.attributes or {}).get(key))] += int(getattr(point, "value", 0))
    return values


def test_10000_route_names_make_at_most_cap_label_values_and_counts_stay_exact() -> None:
    sinks = InMemoryTelemetry()
    handler = ConfidenceCallbackHandler(exporters=sinks.exporters(metadata_labels=["route"], max_label_values=CAP))
    for i in range(ROUTES):
        respond(handler, {"route": f"/api/v1/items/{i}", "request_id": str(uuid4())})
    # Adversarial shapes too: very long, not a string, nested.
    for odd in ("x" * 10_000, {"nested": ["route"]}, ["a", "b"], b"bytes", None):
        respond(handler, {"route": odd})
    assert dict(handler.errors) == {}
    total = ROUTES + 5
    routes = label_values(sinks, "llm_responses_total", "route")
    # The first CAP routes keep their names; every later one, and the odd ones, read "other";
    # a missing value reads "".
    assert set(routes) == {f"/api/v1/items/{i}" for i in range(CAP)} | {"other", ""}
    assert routes["other"] == ROUTES - CAP + 4 and routes[""] == 1
    assert sum(routes.values()) == total
    histogram = label_values(sinks, "llm_response_sequence_probability_count", "route")
    assert len(histogram) == CAP + 2 and sum(histogram.values()) == total
    otel = otel_attribute_values(sinks, "llm.responses", "llm.confidence.metadata.route")
    assert len(otel) == CAP + 2 and sum(otel.values()) == total
    # No other metadata key became a label: request ids are free text.
    label_names = {name for family in sinks.registry.collect() for s in family.samples for name in s.labels}
    assert label_names == {"provider", "model", "route", "status", "logprobs", "le"}
    # Series per metric: one per (route value) here, whatever the traffic was.
    series = sum(1 for f in sinks.registry.collect() for s in f.samples if s.name == "llm_responses_total")
    assert series == CAP + 2
    sinks.shutdown()


def test_metadata_is_never_a_label_unless_allowlisted() -> None:
    sinks = InMemoryTelemetry()
    handler = ConfidenceCallbackHandler(exporters=sinks.exporters())
    for i in range(500):
        respond(handler, {"route": f"/r/{i}", "user_id": f"user-{i}", "thread_id": str(uuid4())})
    label_names = {name for family in sinks.registry.collect() for s in family.samples for name in s.labels}
    assert label_names == {"provider", "model", "status", "logprobs", "le"}
    assert sinks.sample("llm_responses_total") == 500
    sinks.shutdown()


def test_distinct_model_names_from_metadata_stay_bounded() -> None:
    # ``ls_model_name`` is run metadata too, and the response's model name comes from the provider:
    # a proxy that stamps each answer with its own deployment id must not create a series per answer.
    sinks = InMemoryTelemetry()
    handler = ConfidenceCallbackHandler(exporters=sinks.exporters(max_label_values=CAP))
    for i in range(500):
        respond(handler, {}, model_name=f"gpt-test-{i}")
    models = label_values(sinks, "llm_responses_total", "model")
    assert sum(models.values()) == 500
    assert len(models) <= CAP + 1, f"{len(models)} distinct model label values for a cap of {CAP}"
    sinks.shutdown()
