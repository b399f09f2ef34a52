"""``handler.record_feedback``: a verdict joined to a recent response is counted by outcome and by
the response's sequence-probability bucket, in Prometheus and OpenTelemetry; unknown ids are
counted, not raised; wrong arguments raise at once."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from observability import ConfidenceCallbackHandler, ResponseRecord
from observability.testing import FakeLogprobChatModel, InMemoryTelemetry

# Three answers with sequence probabilities in three different buckets (computed in the test).
ANSWERS = [[-0.05, -0.1], [-0.4, -0.5], [-1.5, -2.0]]


@pytest.fixture
def telemetry() -> Iterator[InMemoryTelemetry]:
    sinks = InMemoryTelemetry()
    yield sinks
    sinks.shutdown()


def answered(handler: ConfidenceCallbackHandler) -> list[ResponseRecord]:
    records: list[ResponseRecord] = []
    handler.on_report = records.append
    for logprobs in ANSWERS:
        model = FakeLogprobChatModel(tokens=["a", "b"], token_logprobs=logprobs)
        model.invoke("hi", config={"callbacks": [handler]})
    return records


def bucket(logprobs: list[float]) -> str:
    return f"{math.floor(math.exp(sum(logprobs) / len(logprobs)) * 10) / 10:.1f}"


def test_verdicts_are_counted_by_outcome_and_confidence_bucket(telemetry: InMemoryTelemetry) -> None:
    handler = ConfidenceCallbackHandler(exporters=telemetry.exporters(), feedback_window=10)
    records = answered(handler)
    buckets = [bucket(lp) for lp in ANSWERS]
    assert len(set(buckets)) == 3, buckets
    verdicts = [True, True, False]
    for record, correct in zip(records, verdicts, strict=True):
        assert handler.record_feedback(str(record.start.run_id), correct) is True
    handler.record_feedback(records[0].start.run_id, False)  # a second verdict on one response counts too
    expected = {(buckets[0], "correct"): 1, (buckets[0], "incorrect"): 1, (buckets[1], "correct"): 1,
                (buckets[2], "incorrect"): 1}
    for (confidence, outcome), count in expected.items():
        assert telemetry.sample("llm_feedback_total", confidence=confidence, outcome=outcome,
                                provider="fake", model="fake-logprobs") == count
    assert telemetry.sample("llm_feedback_total") == 4
    metrics = telemetry.metrics()
    assert metrics is not None
    points = [p for rm in metrics.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              if m.name == "llm.feedback" for p in m.data.data_points]
    otel = {(p.attributes["llm.confidence.feedback.confidence"], p.attributes["llm.confidence.feedback.outcome"]):
            p.value for p in points}
    assert otel == expected
    assert handler.unknown_feedback == 0 and dict(handler.errors) == {}


def test_unknown_and_forgotten_runs_are_counted_not_raised(telemetry: InMemoryTelemetry) -> None:
    handler = ConfidenceCallbackHandler(exporters=telemetry.exporters(), feedback_window=2)
    records = answered(handler)
    assert handler.record_feedback("00000000-0000-0000-0000-000000000000", True) is False
    assert handler.record_feedback(records[0].start.run_id, True) is False  # beyond the bound: forgotten
    assert handler.record_feedback(records[2].start.run_id, True, choice_index=1) is False  # no such choice
    assert handler.record_feedback(records[2].start.run_id, True) is True
    assert handler.unknown_feedback == 3
    assert telemetry.sample("llm_feedback_total") == 1


@pytest.mark.parametrize(("args", "kwargs", "error"), [
    pytest.param(("not-a-uuid", True), {}, ValueError, id="bad-id"),
    pytest.param((42, True), {}, TypeError, id="id-type"),
    pytest.param(("00000000-0000-0000-0000-000000000000", "yes"), {}, TypeError, id="verdict"),
    pytest.param(("00000000-0000-0000-0000-000000000000", True), {"choice_index": -1}, ValueError, id="choice"),
])
def test_wrong_arguments_raise_at_once(args: tuple[Any, ...], kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        ConfidenceCallbackHandler(exporters=(), feedback_window=1).record_feedback(*args, **kwargs)


def test_without_a_window_the_call_names_the_option() -> None:
    handler = ConfidenceCallbackHandler(exporters=())
    answered(handler)
    assert handler._answered == {}  # nothing kept by default
    with pytest.raises(RuntimeError, match="feedback_window"):
        handler.record_feedback("00000000-0000-0000-0000-000000000000", True)
    with pytest.raises(ValueError, match="feedback_window"):
        ConfidenceCallbackHandler(exporters=(), feedback_window=-1)


def test_no_content_is_kept_for_feedback() -> None:
    handler = ConfidenceCallbackHandler(exporters=(), feedback_window=5)
    answered(handler)
    kept = list(handler._answered.values())
    assert kept and all(record.tokens == () and record.text is None for record in kept)
