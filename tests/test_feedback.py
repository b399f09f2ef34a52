"""``handler.record_feedback``: a verdict joined to a recent response is counted by outcome and by
the response's sequence-probability bucket, in Prometheus and OpenTelemetry; unknown ids are
counted, not raised; wrong arguments raise at once."""

from __future__ import annotations

import gc
import math
import tracemalloc
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from opentelemetry.sdk.metrics.export import NumberDataPoint

from observability import ConfidenceCallbackHandler, ResponseRecord
from observability.testing import FakeLogprobChatModel, InMemoryTelemetry

# Three answers with sequence probabilities in three different buckets (computed in the test).
ANSWERS = [[-0.05, -0.1], [-0.4, -0.5], [-1.5, -2.0]]


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
    expected = {(buckets[0], "correct"): 1, (buckets[1], "correct"): 1, (buckets[2], "incorrect"): 1}
    for (confidence, outcome), count in expected.items():
        assert telemetry.sample("llm_feedback_total", confidence=confidence, outcome=outcome,
                                provider="fake", model="fake-logprobs") == count
    assert telemetry.sample("llm_feedback_total") == 3
    metrics = telemetry.metrics()
    assert metrics is not None
    points = [p for rm in metrics.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              if m.name == "llm.feedback" for p in m.data.data_points]
    assert all(isinstance(p, NumberDataPoint) and p.attributes is not None for p in points)
    otel = {(p.attributes["llm.confidence.feedback.confidence"], p.attributes["llm.confidence.feedback.outcome"]):
            p.value for p in points if isinstance(p, NumberDataPoint) and p.attributes is not None}
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
    assert len(handler._feedback) == 0  # nothing kept by default
    with pytest.raises(RuntimeError, match="feedback_window"):
        handler.record_feedback("00000000-0000-0000-0000-000000000000", True)
    with pytest.raises(ValueError, match="feedback_window"):
        ConfidenceCallbackHandler(exporters=(), feedback_window=-1)


def test_no_content_is_kept_for_feedback() -> None:
    handler = ConfidenceCallbackHandler(exporters=(), feedback_window=5)
    model = FakeLogprobChatModel(tokens=['{"name": "', "Ada", '"}'], token_logprobs=[-0.1, -0.9, -0.1])
    model.invoke("What is the secret?", config={"callbacks": [handler], "metadata": {"user": "ada@example.com"}})
    [kept] = handler._feedback.records()
    assert kept.tokens == () and kept.text is None and kept.start.question is None
    assert kept.start.metadata == {} and kept.trace == {} and kept.response_id is None
    assert kept.report is not None and kept.report.fields == () and kept.report.low_confidence_spans == ()
    assert kept.report.sequence_probability == pytest.approx(math.exp(-1.1 / 3))  # what the bucket reads


# ---- a fixed small size --------------------------------------------------------------------------

def retained_per_response(prompt: str, tokens: list[str], metadata: dict[str, Any]) -> float:
    """Memory the handler keeps per response: (growth over 12 calls − growth over 4) / 8, so
    what one call leaves regardless of their number (the last run's state, caches) cancels out."""
    def growth(calls: int) -> int:
        handler = ConfidenceCallbackHandler(exporters=(), feedback_window=100)
        model = FakeLogprobChatModel(tokens=tokens, token_logprobs=[-0.1] * len(tokens))
        model.invoke(prompt, config={"callbacks": [handler], "metadata": metadata})  # warm caches
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(calls):
                model.invoke(prompt, config={"callbacks": [handler], "metadata": metadata})
            gc.collect()
            return tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    return (growth(12) - growth(4)) / 8


def test_a_kept_response_is_a_fixed_small_size() -> None:
    """docs/evaluation.md: about 1.2 KB each, whatever the prompt, the answer and the metadata (a 60 KB
    prompt used to be kept whole, a long JSON answer's fields grew it to megabytes)."""
    small = retained_per_response("hi", ["o", "k"], {})
    json_answer = ['{"items": ['] + ['{"a": 1}, '] * 1_000 + ['{"a": 1}]}']  # 1,001 fields
    big = retained_per_response("x" * 60_000, json_answer, {"user": "u" * 10_000, "tenant": "acme"})
    assert small < 1536 and big < 1536, (small, big)
    assert abs(big - small) < 256, (small, big)


def test_label_values_are_kept_as_the_counters_read_them(telemetry: InMemoryTelemetry) -> None:
    """The allowlisted metadata labels survive the slimming: a verdict is counted under the same
    label values as its response, a value that could not be a label reads "other" as it did."""
    handler = ConfidenceCallbackHandler(exporters=telemetry.exporters(metadata_labels=["tenant"]), feedback_window=5)
    records: list[ResponseRecord] = []
    handler.on_report = records.append
    model = FakeLogprobChatModel(tokens=["a"], token_logprobs=[-0.1])
    for tenant in ("acme", "t" * 500):
        model.invoke("hi", config={"callbacks": [handler], "metadata": {"tenant": tenant, "secret": "s"}})
    for record in records:
        assert handler.record_feedback(record.start.run_id, True)
    assert telemetry.sample("llm_feedback_total", tenant="acme") == 1
    assert telemetry.sample("llm_feedback_total", tenant="other") == 1
    assert all(set(r.start.metadata) == {"tenant"} for r in handler._feedback.records())


# ---- one verdict per response ----------------------------------------------------------------------

def test_only_the_first_verdict_on_a_response_counts(telemetry: InMemoryTelemetry) -> None:
    handler = ConfidenceCallbackHandler(exporters=telemetry.exporters(), feedback_window=10)
    first, *_ = answered(handler)
    assert handler.record_feedback(first.start.run_id, True) is True
    assert handler.record_feedback(first.start.run_id, False) is False  # a user flipping thumbs
    assert handler.record_feedback(str(first.start.run_id), True) is False
    assert telemetry.sample("llm_feedback_total") == 1
    assert telemetry.sample("llm_feedback_total", outcome="correct") == 1
    assert handler.repeated_feedback == 2 and handler.unknown_feedback == 0


@pytest.mark.parametrize("order", ["windowed-first", "windowed-second"])
def test_a_verdict_reaches_the_handler_that_kept_the_response_when_attached_twice(
        telemetry: InMemoryTelemetry, order: str) -> None:
    """Two handlers share the exporters (attached explicitly and by a hook): one exports each run,
    the other counts it in duplicate_runs. The one with the window keeps the response either way,
    and the verdict is counted once."""
    shared = telemetry.exporters()
    plain = ConfidenceCallbackHandler(exporters=shared)
    windowed = ConfidenceCallbackHandler(exporters=shared, feedback_window=10)
    seen: list[ResponseRecord] = []
    plain.on_report = seen.append
    handlers: list[BaseCallbackHandler] = [windowed, plain] if order == "windowed-first" else [plain, windowed]
    FakeLogprobChatModel(tokens=["a", "b"], token_logprobs=[-0.2, -0.3]).invoke("hi", config={"callbacks": handlers})
    assert plain.duplicate_runs + windowed.duplicate_runs == 1  # exactly one of them exported the run
    run_id = seen[0].start.run_id
    assert windowed.record_feedback(run_id, True) is True
    assert telemetry.sample("llm_feedback_total", outcome="correct") == 1
    with pytest.raises(RuntimeError, match="feedback_window"):
        plain.record_feedback(run_id, True)  # the handler without a window still says what to set
    assert windowed.record_feedback(run_id, False) is False
    assert telemetry.sample("llm_feedback_total") == 1 and windowed.unknown_feedback == 0


def test_two_windows_keeping_one_response_count_one_verdict(telemetry: InMemoryTelemetry) -> None:
    shared = telemetry.exporters()
    first = ConfidenceCallbackHandler(exporters=shared, feedback_window=10)
    second = ConfidenceCallbackHandler(exporters=shared, feedback_window=10)
    seen: list[ResponseRecord] = []
    first.on_report = seen.append
    FakeLogprobChatModel(tokens=["a"], token_logprobs=[-0.2]).invoke("hi", config={"callbacks": [first, second]})
    run_id = seen[0].start.run_id
    assert second.record_feedback(run_id, False) is True
    assert first.record_feedback(run_id, True) is False
    assert telemetry.sample("llm_feedback_total") == 1
    assert telemetry.sample("llm_feedback_total", outcome="incorrect") == 1
    assert first.repeated_feedback == 1
