"""``confidence_fallback``: on real model calls the gate falls back exactly when the confidence
report of the primary's answer is below the threshold, in every call mode; decisions are counted
and traced; errors are never a reason to fall back.

The expected decision of each call is read from a separate handler attached to the same call (the
handler's own report), never from the gate.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict, cast

import pytest
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableLambda
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from observability import ConfidenceCallbackHandler, ConfidenceReport, ResponseRecord
from observability.langchain.gate import ConfidenceMissing, confidence_fallback
from observability.testing import InMemoryTelemetry

pytestmark = pytest.mark.real_model
QUESTIONS = ["What is the capital of France?", "Name a prime number.", "What colour is the sky?",
             "Who wrote Hamlet?", "What is 7 times 8?", "Name a planet."]
FALLBACK = "I am not sure."


@pytest.fixture
def primary(chat_model: Any) -> Any:
    return chat_model(logprobs=True, top_logprobs=3, max_tokens=16)


def gate(primary: Any, telemetry: InMemoryTelemetry, threshold: float, **options: Any) -> Any:
    fallback = options.pop("fallback", RunnableLambda(lambda _: FALLBACK))
    return confidence_fallback(primary, fallback, threshold=threshold, registry=telemetry.registry,
                               meter_provider=telemetry.meter_provider,
                               tracer_provider=telemetry.tracer_provider, **options)


def reports_of(records: list[ResponseRecord]) -> dict[str, ConfidenceReport]:
    """The handler's report of each call, keyed by the question (via the run's metadata)."""
    found: dict[str, ConfidenceReport] = {}
    for record in records:
        assert record.report is not None
        found[str(record.start.metadata["question"])] = record.report
    return found


def configs(records: list[ResponseRecord]) -> list[dict[str, Any]]:
    handler = ConfidenceCallbackHandler(exporters=(), on_report=records.append)
    return [{"callbacks": [handler], "metadata": {"question": q}} for q in QUESTIONS]


def figures(primary: Any) -> dict[str, float]:
    records: list[ResponseRecord] = []
    primary.batch(QUESTIONS, configs(records))
    return {q: r.sequence_probability for q, r in reports_of(records).items()}  # type: ignore[misc]


def check_decisions(outputs: list[Any], records: list[ResponseRecord], threshold: float) -> tuple[int, int]:
    reports = reports_of(records)
    assert len(reports) == len(QUESTIONS)  # the handler saw exactly the primary's runs
    kept = fell_back = 0
    for question, output in zip(QUESTIONS, outputs, strict=True):
        figure = reports[question].sequence_probability
        assert figure is not None
        if figure >= threshold:
            assert isinstance(output, AIMessage), (question, figure, threshold)
            kept += 1
        else:
            assert output == FALLBACK, (question, figure, threshold)
            fell_back += 1
    return kept, fell_back


def test_invoke_ainvoke_batch_and_abatch_fall_back_exactly_below_the_threshold(
        primary: Any, telemetry: InMemoryTelemetry) -> None:
    threshold = statistics.median(figures(primary).values())
    confident = gate(primary, telemetry, threshold)
    # the handler's records per mode
    runs: dict[str, list[ResponseRecord]] = {mode: [] for mode in ("invoke", "ainvoke", "batch", "abatch")}
    cfgs = {mode: configs(records) for mode, records in runs.items()}
    outputs = {
        "invoke": [confident.invoke(q, c) for q, c in zip(QUESTIONS, cfgs["invoke"], strict=True)],
        "batch": confident.batch(QUESTIONS, cfgs["batch"]),
    }

    async def asynchronously() -> None:  # one event loop: the model's async client belongs to it
        outputs["ainvoke"] = [await confident.ainvoke(q, c) for q, c in zip(QUESTIONS, cfgs["ainvoke"], strict=True)]
        outputs["abatch"] = await confident.abatch(QUESTIONS, cfgs["abatch"])

    asyncio.run(asynchronously())
    totals = {"kept": 0, "fell_back": 0}
    for mode, records in runs.items():
        kept, fell_back = check_decisions(outputs[mode], records, threshold)
        assert kept and fell_back, (mode, kept, fell_back)  # the median splits them: both paths ran
        totals["kept"] += kept
        totals["fell_back"] += fell_back
    # Counted by outcome, and one span per decision with the figure it was decided on.
    for outcome, count in totals.items():
        assert telemetry.sample("llm_confidence_gate_decisions_total", gate="confidence_fallback",
                                outcome=outcome) == count
    spans = [s for s in telemetry.spans() if s.name == "confidence_gate confidence_fallback"]
    assert len(spans) == 4 * len(QUESTIONS)
    for span in spans:
        attributes = span.attributes or {}
        figure = attributes["llm.confidence.gate.figure"]
        assert isinstance(figure, float)
        assert attributes["llm.confidence.gate.outcome"] == ("kept" if figure >= threshold else "fell_back")
        assert attributes["llm.confidence.gate.threshold"] == threshold


def test_a_figure_equal_to_the_threshold_keeps_the_answer(primary: Any, telemetry: InMemoryTelemetry) -> None:
    question = QUESTIONS[0]
    exact = figures(primary)[question]
    assert isinstance(gate(primary, telemetry, exact).invoke(question), AIMessage)
    assert gate(primary, telemetry, exact + 1e-12).invoke(question) == FALLBACK


class State(TypedDict):
    messages: Annotated[list[BaseMessage], add_messages]


def never(_: ConfidenceReport) -> bool:
    return False


def test_stream_yields_the_chosen_answer_once_after_the_decision(primary: Any, telemetry: InMemoryTelemetry) -> None:
    chunks = list(gate(primary, telemetry, 0.5, metric=never).stream(QUESTIONS[0]))
    assert chunks == [FALLBACK]
    kept = list(gate(primary, telemetry, 0.0).stream(QUESTIONS[0]))
    assert len(kept) == 1 and isinstance(kept[0], AIMessage)


def test_a_chat_ui_on_the_real_model_never_shows_the_rejected_answer(
        primary: Any, chat_model: Any, telemetry: InMemoryTelemetry) -> None:
    """LangGraph ``stream_mode="messages"`` over ChatOpenAI on the bundled model: rejected, the
    UI shows only the fallback model's tokens; kept, only the primary's, token by token."""
    def shown(confident: Any) -> list[str]:
        builder = StateGraph(State)
        builder.add_node("answer", lambda state: {"messages": [confident.invoke(state["messages"])]})
        builder.add_edge(START, "answer")
        builder.add_edge("answer", END)
        stream = builder.compile().stream(cast(State, {"messages": [("user", QUESTIONS[3])]}),
                                         stream_mode="messages")
        return [message.text for message, _ in cast(Iterator[tuple[BaseMessage, Any]], stream) if message.text]

    # The fallback: the same model asked for a different, fixed-length answer (max_tokens=4).
    fallback = chat_model(max_tokens=4)
    rejected = shown(gate(primary, telemetry, 0.5, metric=never, fallback=fallback))
    direct = fallback.invoke(QUESTIONS[3]).text  # temperature 0: the same answer
    assert "".join(rejected) == direct and len(rejected) > 1  # only the fallback's tokens, as they came
    primary_answer = primary.invoke(QUESTIONS[3]).text
    kept = shown(gate(primary, telemetry, 0.0, fallback=fallback))
    assert "".join(kept) == primary_answer and len(kept) > 1


def test_keyword_arguments_reach_the_model(primary: Any, telemetry: InMemoryTelemetry) -> None:
    """``stop`` reaches the real server through the gate as through ``with_fallbacks``."""
    plain = primary.invoke(QUESTIONS[0]).text
    assert " " in plain.strip()
    stopped = gate(primary, telemetry, 0.0).invoke(QUESTIONS[0], stop=[" "])
    assert stopped.text == plain[:plain.index(" ")]
    assert stopped.text == primary.with_fallbacks([primary]).invoke(QUESTIONS[0], stop=[" "]).text


def test_other_metrics_and_a_callable(primary: Any, telemetry: InMemoryTelemetry) -> None:
    records: list[ResponseRecord] = []
    config = configs(records)[1]
    seen: list[ConfidenceReport] = []

    def doubtful_tokens_at_most_half(report: ConfidenceReport) -> bool:
        seen.append(report)
        return (report.low_confidence_ratio or 0.0) <= 0.5

    output = gate(primary, telemetry, 0.0, metric=doubtful_tokens_at_most_half).invoke(QUESTIONS[1], config)
    (report,) = reports_of(records).values()
    assert seen == [report]
    assert isinstance(output, AIMessage) == ((report.low_confidence_ratio or 0.0) <= 0.5)
    minimum = report.min_token_probability
    assert minimum is not None
    assert gate(primary, telemetry, minimum, metric="min_token_probability").invoke(QUESTIONS[1]) != FALLBACK
    assert gate(primary, telemetry, minimum * 1.001 + 1e-12, metric="min_token_probability").invoke(
        QUESTIONS[1]) == FALLBACK


def test_without_logprobs_on_missing_decides(chat_model: Any, telemetry: InMemoryTelemetry) -> None:
    plain = chat_model(max_tokens=8)  # logprobs not requested
    assert isinstance(gate(plain, telemetry, 0.5).invoke("Hi"), AIMessage)
    assert gate(plain, telemetry, 0.5, on_missing="fallback").invoke("Hi") == FALLBACK
    with pytest.raises(ConfidenceMissing):
        gate(plain, telemetry, 0.5, on_missing="raise").invoke("Hi")
    assert telemetry.sample("llm_confidence_gate_decisions_total", outcome="missing") == 3


def test_a_failing_fallback_raises_to_the_app(primary: Any, telemetry: InMemoryTelemetry) -> None:
    def broken(_: Any) -> str:
        raise LookupError("the escalation queue is down")

    with pytest.raises(LookupError, match="escalation queue"):
        gate(primary, telemetry, 0.5, metric=never, fallback=RunnableLambda(broken)).invoke(QUESTIONS[0])
    (span,) = [s for s in telemetry.spans() if s.name.startswith("confidence_gate")]
    assert not span.status.is_ok and (span.attributes or {})["llm.confidence.gate.outcome"] == "fell_back"


def test_the_primarys_error_is_not_a_reason_to_fall_back(chat_model: Any, telemetry: InMemoryTelemetry) -> None:
    from observability.demo.process import free_port

    dead = chat_model(logprobs=True, base_url=f"http://127.0.0.1:{free_port()}/v1", timeout=5)
    called: list[Any] = []

    def fallback_answer(x: Any) -> str:
        called.append(x)
        return FALLBACK

    fallback = RunnableLambda(fallback_answer)
    import openai

    with pytest.raises(openai.APIConnectionError):
        gate(dead, telemetry, 0.5, fallback=fallback).invoke(QUESTIONS[0])
    assert called == []
    assert telemetry.sample("llm_confidence_gate_decisions_total") is None  # no decision was made
