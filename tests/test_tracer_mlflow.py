"""Confidence in MLflow: ``mlflow.langchain.autolog()`` from the real ``mlflow-tracing`` client,
tracing to a real ``mlflow server`` (its own virtualenv, ``make mlflow``; SQLite backend, one per
module) and read back through MLflow's client; the bundled model behind the real ``ChatOpenAI``.

Each model call is one MLflow trace whose one LLM span carries ``llm.confidence.*`` equal to what
the model server's raw response gives, and the headline figures as feedback assessments on that
span. A failed call keeps its exception and gets no figures; an MLflow server that does not answer,
or is not there, never holds up the app's call.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from observability import ConfidenceCallbackHandler, ResponseRecord, observe_confidence
from observability.demo.model_server import MODEL_NAME
from observability.exporters._otel_spans import HEADLINE_SCORES
from observability.langchain import mlflow_runs
from observability.testing import InMemoryTelemetry
from tests.conftest import raw_chat_completion, running
from tests.tracer_support import QUESTION, call, langsmith_endpoint

pytestmark = [pytest.mark.real_model, pytest.mark.real_backend]

# No usage reports from MLflow's client: this process talks to loopback only.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

MAX_TOKENS = 8
CHAT_MODEL = "CHAT_MODEL"  # MLflow's span type for a chat model run


@pytest.fixture(scope="module")
def mlflow_server() -> Iterator[Any]:
    """One real MLflow tracking server for this module, with LangChain autologging on while it runs."""
    import mlflow

    from tests.backends import MlflowServer

    for server in running(MlflowServer(), "the MLflow tracking server (`make mlflow`)"):
        mlflow.set_tracking_uri(server.url)  # every MLflow test sets its own
        mlflow.langchain.autolog(silent=True)
        try:
            yield server
        finally:
            mlflow.langchain.autolog(disable=True)
            mlflow.flush_trace_async_logging()  # while the server still runs


@pytest.fixture
def experiment(mlflow_server: Any) -> str:
    """A fresh MLflow experiment for this test's traces."""
    import mlflow

    return str(mlflow.set_experiment(f"confidence-{uuid.uuid4().hex[:8]}").experiment_id)


def traces(experiment: str, count: int, assessments: int) -> list[Any]:
    """The experiment's traces, oldest first, checked to be ``count`` with ``assessments`` feedback
    assessments in all, once MLflow has exported its traces and our queue has logged (or given up on)
    every assessment: both work in the background."""
    import mlflow

    mlflow.flush_trace_async_logging()
    assert mlflow_runs.FEEDBACK.flush(120), "the assessment queue did not finish in 120 s"
    found = mlflow.search_traces(locations=[experiment], return_type="list", order_by=["timestamp_ms ASC"])
    assert (len(found), sum(len(t.info.assessments) for t in found)) == (count, assessments)
    return [mlflow.get_trace(t.info.trace_id) for t in found]


def search(experiment: str, filter_string: str) -> list[Any]:
    import mlflow

    return list(mlflow.search_traces(locations=[experiment], filter_string=filter_string, return_type="list"))


def llm_span(trace: Any) -> Any:
    (span,) = [s for s in trace.data.spans if s.span_type == CHAT_MODEL]
    return span


def confidence(span: Any) -> dict[str, Any]:
    return {k: v for k, v in span.attributes.items() if k.startswith("llm.confidence.")}


def feedback(trace: Any, span: Any) -> dict[str, float]:
    found = {}
    for assessment in trace.info.assessments:
        assert assessment.span_id == span.span_id and assessment.source.source_id == mlflow_runs.SOURCE_ID
        found[assessment.name] = assessment.feedback.value
    return found


def expected_from_raw(logprobs: list[float]) -> dict[str, float]:
    """The figures, computed here from the raw logprobs the server sent (threshold 0.5)."""
    probabilities = [math.exp(lp) for lp in logprobs]
    return {"token_count": len(logprobs), "sequence_logprob": math.fsum(logprobs),
            "sequence_probability": math.exp(math.fsum(logprobs) / len(logprobs)),
            "min_token_probability": min(probabilities),
            "low_confidence_ratio": sum(p < 0.5 for p in probabilities) / len(probabilities)}


def test_an_invoke_gives_one_mlflow_llm_span_with_the_figures_of_the_raw_response(
        experiment: str, telemetry: InMemoryTelemetry, chat_model: Any, local_model: Any) -> None:
    records: list[ResponseRecord] = []
    with observe_confidence(exporters=telemetry.exporters(), on_report=records.append):
        chat_model(max_tokens=MAX_TOKENS).bind(logprobs=True, top_logprobs=2).invoke(QUESTION)
    (trace,) = traces(experiment, 1, len(HEADLINE_SCORES))
    span = llm_span(trace)
    assert span.name == "ChatOpenAI" and span.outputs  # MLflow's own fields stay
    raw = raw_chat_completion(local_model.base_url, {
        "model": MODEL_NAME, "messages": [{"role": "user", "content": QUESTION}], "temperature": 0,
        "max_tokens": MAX_TOKENS, "logprobs": True, "top_logprobs": 2})
    expected = expected_from_raw([entry["logprob"] for entry in raw["choices"][0]["logprobs"]["content"]])
    figures = confidence(span)
    assert figures["llm.confidence.status"] == "ok" and figures["llm.confidence.logprobs"] == "present"
    for name, value in expected.items():
        assert figures[f"llm.confidence.{name}"] == pytest.approx(value, rel=1e-3, abs=1e-3), name
    assert feedback(trace, span) == pytest.approx({name: expected[name] for name in HEADLINE_SCORES},
                                                  rel=1e-3, abs=1e-3)
    assert [record.status for record in records] == ["ok"]
    assert telemetry.sample("llm_responses_total", status="ok") == 1  # and ours as without MLflow
    # The filter docs/peer-tracers.md shows: MLflow's search compares the assessment's value.
    below = f"feedback.sequence_probability < {expected['sequence_probability'] + 1e-3}"
    above = f"feedback.sequence_probability > {expected['sequence_probability'] + 1e-3}"
    assert [t.info.trace_id for t in search(experiment, below)] == [trace.info.trace_id]
    assert search(experiment, above) == []
    assert mlflow_runs.FEEDBACK.failed == mlflow_runs.FEEDBACK.dropped == 0


@pytest.mark.parametrize("how", ["stream", "async"])
def test_stream_and_async_calls_each_give_one_llm_span_with_their_figures(
        how: str, experiment: str, telemetry: InMemoryTelemetry, chat_model: Any) -> None:
    """Our handler passed in ``config`` this time; ``async`` is ``ainvoke`` then ``astream``."""
    records: list[ResponseRecord] = []
    handler = ConfidenceCallbackHandler(exporters=telemetry.exporters(), on_report=records.append)
    call(chat_model(max_tokens=MAX_TOKENS).bind(logprobs=True, top_logprobs=2), how, {"callbacks": [handler]})
    assert len(records) == (2 if how == "async" else 1)
    found = traces(experiment, len(records), len(records) * len(HEADLINE_SCORES))
    for trace, record in zip(found, sorted(records, key=lambda r: r.start.started_at_ns), strict=True):
        span = llm_span(trace)
        report = record.report
        assert report is not None and report.token_count > 0
        figures = confidence(span)
        assert figures["llm.confidence.token_count"] == report.token_count
        assert figures["llm.confidence.sequence_logprob"] == pytest.approx(report.sequence_logprob)
        assert feedback(trace, span) == pytest.approx({name: getattr(report, name) for name in HEADLINE_SCORES})


def test_a_second_handler_with_exporters_of_its_own_adds_no_second_assessments(
        experiment: str, telemetry: InMemoryTelemetry, chat_model: Any) -> None:
    other = InMemoryTelemetry()
    try:
        handlers = [ConfidenceCallbackHandler(exporters=sinks.exporters()) for sinks in (telemetry, other)]
        chat_model(max_tokens=MAX_TOKENS).bind(logprobs=True).invoke(QUESTION, config={"callbacks": handlers})
    finally:
        other.shutdown()
    (trace,) = traces(experiment, 1, len(HEADLINE_SCORES))
    assert set(feedback(trace, llm_span(trace))) == set(HEADLINE_SCORES)


def test_a_failed_call_keeps_its_exception_and_gets_no_figures(
        experiment: str, telemetry: InMemoryTelemetry, chat_model: Any) -> None:
    import openai

    with pytest.raises(openai.APIConnectionError), observe_confidence(exporters=telemetry.exporters()):
        chat_model(max_tokens=MAX_TOKENS, base_url="http://127.0.0.1:9/v1").bind(logprobs=True).invoke(QUESTION)
    (trace,) = traces(experiment, 1, 0)
    span = llm_span(trace)
    assert span.status.status_code == "ERROR"
    assert confidence(span) == {"llm.confidence.status": "error", "llm.confidence.logprobs": "not_returned"}
    assert trace.info.assessments == []


@pytest.mark.parametrize("mlflow_state", ["not answering", "unreachable"])
def test_the_app_never_waits_on_mlflow(mlflow_state: str, mlflow_server: Any, telemetry: InMemoryTelemetry,
                                       chat_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's tracking URI is a server that holds every request until the test ends, or a closed
    port: the calls return with their figures in our own telemetry while no assessment was logged."""
    import mlflow

    queue = mlflow_runs.FeedbackQueue(wait_for_trace=1.0, retry_every=0.1)
    monkeypatch.setattr(mlflow_runs, "FEEDBACK", queue)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with langsmith_endpoint(slow=True) as holding:  # answers nothing until released
        mlflow.set_tracking_uri(holding.url if mlflow_state == "not answering" else "http://127.0.0.1:9")
        try:
            records: list[ResponseRecord] = []
            llm = chat_model(max_tokens=MAX_TOKENS).bind(logprobs=True, top_logprobs=2)
            with observe_confidence(exporters=telemetry.exporters(), on_report=records.append):
                for how in ("invoke", "stream", "async"):
                    call(llm, how, {})
            assert [record.status for record in records] == ["ok"] * 4
            assert telemetry.sample("llm_responses_total", status="ok") == 4
            assert queue.sent == 0  # the calls returned before any assessment reached MLflow
            holding.release.set()
            assert queue.flush(60), "the feedback queue did not give up on an MLflow that is not there"
            assert queue.sent == 0 and queue.failed == 4 and queue.dropped == 0
        finally:
            holding.release.set()
            mlflow.flush_trace_async_logging()
            mlflow.set_tracking_uri(mlflow_server.url)


def test_peer_spans_never_leaves_mlflows_trace_as_it_was(
        experiment: str, telemetry: InMemoryTelemetry, chat_model: Any) -> None:
    with observe_confidence(exporters=telemetry.exporters(peer_spans="never")):
        chat_model(max_tokens=MAX_TOKENS).bind(logprobs=True).invoke(QUESTION)
    (trace,) = traces(experiment, 1, 0)
    assert confidence(llm_span(trace)) == {} and trace.info.assessments == []
    (span,) = telemetry.spans()
    assert (span.attributes or {})["llm.confidence.status"] == "ok"


def test_without_autolog_mlflow_sees_nothing_and_our_span_is_made(
        experiment: str, telemetry: InMemoryTelemetry, chat_model: Any) -> None:
    import mlflow

    mlflow.langchain.autolog(disable=True)
    try:
        with observe_confidence(exporters=telemetry.exporters()):
            chat_model(max_tokens=MAX_TOKENS).bind(logprobs=True).invoke(QUESTION)
    finally:
        mlflow.langchain.autolog(silent=True)
    mlflow.flush_trace_async_logging()
    assert mlflow.search_traces(locations=[experiment], return_type="list") == []
    (span,) = telemetry.spans()
    assert span.name == f"chat {MODEL_NAME}" and (span.attributes or {})["llm.confidence.status"] == "ok"
