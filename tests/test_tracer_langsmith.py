"""Confidence in LangSmith: the real ``langsmith`` client and LangChain's own ``LangChainTracer``,
posting to a loopback LangSmith API (tests/tracer_support.py) that keeps the runs it receives; the
bundled model behind the real ``ChatOpenAI``.

The model run LangSmith receives carries ``llm.confidence.*`` in its metadata, equal to what the
model server's raw response gives; the app never waits on LangSmith (a LangSmith that does not
answer, or is not there, leaves the call and the figures as they are).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

from observability import ConfidenceCallbackHandler, ResponseRecord, observe_confidence
from observability.demo.model_server import MODEL_NAME
from observability.exporters._otel_spans import REPORT_FIELDS
from observability.testing import InMemoryTelemetry
from tests.conftest import raw_chat_completion
from tests.tracer_support import QUESTION, Received, call, langsmith_endpoint

pytestmark = pytest.mark.real_model

MAX_TOKENS = 8


def langsmith_client(url: str) -> Any:
    from langsmith import Client

    return Client(api_url=url, api_key="loopback-test-key", timeout_ms=(2_000, 5_000))


@pytest.fixture
def langsmith(monkeypatch: pytest.MonkeyPatch) -> Iterator[Received]:
    """LANGSMITH_TRACING=true as a user sets it, with LangChain's cached client pointed at the stand-in."""
    import langsmith.run_trees as run_trees
    import langsmith.utils

    def forget_cached_environment() -> None:
        # langsmith caches what it read of LANGSMITH_* (lru_cache): a test earlier in the same
        # process that ran without LANGSMITH_TRACING would otherwise keep tracing off here.
        cast(Any, langsmith.utils.get_env_var).cache_clear()  # lru_cache behind an overload
        langsmith.utils.get_tracer_project.cache_clear()

    with langsmith_endpoint() as received:
        client = langsmith_client(received.url)
        monkeypatch.setenv("LANGSMITH_TRACING", "true")
        monkeypatch.setenv("LANGSMITH_PROJECT", "confidence-tests")
        monkeypatch.setattr(run_trees, "_CLIENT", client)
        forget_cached_environment()
        yield received
        client.flush()
        client.cleanup()
    monkeypatch.undo()
    forget_cached_environment()


def flushed(received: Received, count: int) -> dict[str, dict[str, Any]]:
    """The model runs LangSmith received once ``count`` of them have ended (LangChain's flush first)."""
    from langchain_core.tracers.langchain import wait_for_all_tracers

    wait_for_all_tracers()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = {i: r for i, r in received.runs().items() if r.get("run_type") == "llm" and r.get("end_time")}
        if len(runs) >= count:
            return runs
        time.sleep(0.1)
    raise AssertionError(f"LangSmith received {len(runs)} ended model runs, expected {count}: {received.requests}")


def metadata(run: dict[str, Any]) -> dict[str, Any]:
    return dict((run.get("extra") or {}).get("metadata") or {})


def assert_carries(run: dict[str, Any], record: ResponseRecord) -> None:
    figures = {k: v for k, v in metadata(run).items() if k.startswith("llm.confidence.")}
    assert figures["llm.confidence.status"] == record.status
    assert figures["llm.confidence.logprobs"] == record.logprobs
    report = record.report
    assert report is not None and report.token_count > 0
    for name in REPORT_FIELDS:
        if getattr(report, name) is not None:
            assert figures[f"llm.confidence.{name}"] == pytest.approx(getattr(report, name)), name


@pytest.mark.parametrize("attach", ["explicit", "observe_confidence"])
@pytest.mark.parametrize("how", ["invoke", "stream", "async"])
def test_each_model_run_in_langsmith_carries_the_figures_in_its_metadata(
        how: str, attach: str, langsmith: Received, telemetry: InMemoryTelemetry, chat_model: Any) -> None:
    records: list[ResponseRecord] = []
    llm = chat_model(max_tokens=MAX_TOKENS).bind(logprobs=True, top_logprobs=2)
    if attach == "explicit":
        call(llm, how, {"callbacks": [ConfidenceCallbackHandler(exporters=telemetry.exporters(),
                                                                on_report=records.append)]})
    else:
        with observe_confidence(exporters=telemetry.exporters(), on_report=records.append):
            call(llm, how, {})
    runs = flushed(langsmith, len(records))
    assert len(runs) == len(records) == (2 if how == "async" else 1)
    for record in records:
        run = runs[str(record.run_id)]  # LangSmith's run id is LangChain's
        assert run["name"] == "ChatOpenAI" and run["outputs"]["generations"]  # LangSmith's own fields stay
        assert_carries(run, record)
    assert telemetry.sample("llm_responses_total", status="ok") == len(records)  # and ours as without it


def test_the_figures_equal_the_model_servers_raw_logprobs(
        langsmith: Received, telemetry: InMemoryTelemetry, chat_model: Any, local_model: Any) -> None:
    with observe_confidence(exporters=telemetry.exporters()):
        chat_model(max_tokens=MAX_TOKENS).bind(logprobs=True, top_logprobs=2).invoke(QUESTION)
    (run,) = flushed(langsmith, 1).values()
    raw = raw_chat_completion(local_model.base_url, {
        "model": MODEL_NAME, "messages": [{"role": "user", "content": QUESTION}], "temperature": 0,
        "max_tokens": MAX_TOKENS, "logprobs": True, "top_logprobs": 2})
    logprobs = [entry["logprob"] for entry in raw["choices"][0]["logprobs"]["content"]]
    figures = metadata(run)
    assert figures["llm.confidence.token_count"] == len(logprobs)
    assert figures["llm.confidence.sequence_logprob"] == pytest.approx(sum(logprobs), abs=1e-3)
    assert figures["llm.confidence.sequence_probability"] == pytest.approx(  # length-normalised
        math.exp(sum(logprobs) / len(logprobs)), rel=1e-3)
    assert figures["llm.confidence.min_token_probability"] == pytest.approx(math.exp(min(logprobs)), rel=1e-3)


def test_a_failed_call_gives_langsmiths_run_the_error_status(
        langsmith: Received, telemetry: InMemoryTelemetry, chat_model: Any) -> None:
    with pytest.raises(Exception, match="Connection"), observe_confidence(exporters=telemetry.exporters()):
        chat_model(max_tokens=MAX_TOKENS, base_url="http://127.0.0.1:9/v1").bind(logprobs=True).invoke(QUESTION)
    (run,) = flushed(langsmith, 1).values()
    assert run["error"]
    assert {k: v for k, v in metadata(run).items() if k.startswith("llm.confidence.")} == {
        "llm.confidence.status": "error", "llm.confidence.logprobs": "not_returned"}


@pytest.mark.parametrize("langsmith_state", ["not answering", "unreachable"])
def test_the_app_never_waits_on_langsmith(langsmith_state: str, telemetry: InMemoryTelemetry,
                                          chat_model: Any) -> None:
    """A LangSmith that holds every request until the test ends, or a closed port: the calls
    return, with their figures in our own telemetry, while nothing has reached LangSmith."""
    from langchain_core.tracers.langchain import LangChainTracer

    with langsmith_endpoint(slow=True) as received:
        url = received.url if langsmith_state == "not answering" else "http://127.0.0.1:9"
        client = langsmith_client(url)
        records: list[ResponseRecord] = []
        tracer = LangChainTracer(client=client, project_name="confidence-tests")
        llm = chat_model(max_tokens=MAX_TOKENS).bind(logprobs=True, top_logprobs=2)
        with observe_confidence(exporters=telemetry.exporters(), on_report=records.append):
            for how in ("invoke", "stream", "async"):
                call(llm, how, {"callbacks": [tracer]})
        assert [record.status for record in records] == ["ok"] * 4
        assert telemetry.sample("llm_responses_total", status="ok") == 4
        # Only LangSmith's own requests (none of them answered yet): the figures add no round trip.
        assert received.parts == []
        assert set(received.requests) <= {"GET /info", "POST /runs/multipart"}
        received.release.set()
        client.cleanup()
