"""ConfidenceCallbackHandler through the real ChatOpenAI client against the real local model.

Expected figures come from the same server's raw HTTP responses (temperature 0 is
deterministic), never from numbers the handler produced.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from typing import Any

import openai
import pytest
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.prompts import ChatPromptTemplate
from pydantic import SecretStr

from observability import ConfidenceCallbackHandler, ResponseRecord
from observability.demo.model_server import MODEL_NAME, LocalModelServer
from tests.conftest import raw_chat_completion, raw_chat_stream

pytestmark = pytest.mark.real_model

QUESTION = "What is the capital of France? Answer in one sentence."
MAX_TOKENS = 24
TOP = 5


def make_handler(**kwargs: Any) -> tuple[ConfidenceCallbackHandler, list[ResponseRecord]]:
    records: list[ResponseRecord] = []
    return ConfidenceCallbackHandler(exporters=(), on_report=records.append, **kwargs), records


def raw_body(question: str = QUESTION, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL_NAME, "messages": [{"role": "user", "content": question}], "temperature": 0,
            "max_tokens": MAX_TOKENS, "logprobs": True, "top_logprobs": TOP, **extra}


def expected_from_entries(entries: list[dict[str, Any]]) -> dict[str, float]:
    """Figures computed straight from raw JSON entries, independently of the package."""
    lps = [e["logprob"] for e in entries]
    return {"token_count": len(lps), "sequence_logprob": sum(lps),
            "min_token_probability": math.exp(min(lps)),
            "low_confidence_ratio": sum(math.exp(lp) < 0.5 for lp in lps) / len(lps)}


def assert_matches(record: ResponseRecord, entries: list[dict[str, Any]]) -> None:
    assert record.status == "ok" and record.logprobs == "present"
    report = record.report
    assert report is not None and report.skipped == 0
    expected = expected_from_entries(entries)
    assert report.token_count == expected["token_count"]
    assert report.sequence_logprob == pytest.approx(expected["sequence_logprob"], rel=1e-6)
    assert report.min_token_probability == pytest.approx(expected["min_token_probability"], rel=1e-6)
    assert report.low_confidence_ratio == pytest.approx(expected["low_confidence_ratio"])
    # every token came with TOP alternatives, so the alternative-based figures exist
    assert report.mean_token_entropy is not None and report.mean_top_margin is not None


def stream_entries(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for event in events for choice in event.get("choices", [])
            for entry in ((choice.get("logprobs") or {}).get("content") or [])]


def test_invoke_matches_the_raw_response(local_model: LocalModelServer, chat_model: Any) -> None:
    handler, records = make_handler()
    llm = chat_model(max_tokens=MAX_TOKENS).bind(logprobs=True, top_logprobs=TOP)
    message = llm.invoke(QUESTION, config={"callbacks": [handler]})
    raw = raw_chat_completion(local_model.base_url, raw_body())
    assert message.content == raw["choices"][0]["message"]["content"]
    [record] = records
    assert_matches(record, raw["choices"][0]["logprobs"]["content"])
    assert record.provider == "openai" and record.model == MODEL_NAME
    assert record.start.request_model == MODEL_NAME and record.start.kind == "chat"
    assert record.finish_reason == raw["choices"][0]["finish_reason"]
    assert record.input_tokens == raw["usage"]["prompt_tokens"]
    assert record.output_tokens == raw["usage"]["completion_tokens"]
    assert record.start.temperature == 0 and record.start.max_tokens == MAX_TOKENS
    assert record.time_to_first_token_seconds is None  # not a stream
    assert handler.open_runs == 0 and not handler.errors


def test_stream_matches_the_raw_stream(local_model: LocalModelServer, chat_model: Any) -> None:
    handler, records = make_handler()
    llm = chat_model().bind(logprobs=True, top_logprobs=TOP)
    text = "".join(str(c.content) for c in llm.stream(QUESTION, config={"callbacks": [handler]}))
    entries = stream_entries(raw_chat_stream(local_model.base_url, raw_body()))
    [record] = records
    assert_matches(record, entries)
    assert record.text == text
    ttft = record.time_to_first_token_seconds
    assert ttft is not None and 0 < ttft <= record.duration_seconds


def test_astream_matches_the_raw_stream(local_model: LocalModelServer, chat_model: Any) -> None:
    handler, records = make_handler()
    llm = chat_model().bind(logprobs=True, top_logprobs=TOP)

    async def consume() -> str:
        return "".join([str(c.content) async for c in llm.astream(QUESTION, config={"callbacks": [handler]})])

    text = asyncio.run(consume())
    [record] = records
    assert_matches(record, stream_entries(raw_chat_stream(local_model.base_url, raw_body())))
    assert record.text == text and record.first_token_at_ns is not None


def test_batch_with_two_choices_scores_each_choice(chat_model: Any) -> None:
    handler, records = make_handler()
    llm = chat_model(n=2, temperature=1.0, max_tokens=12).bind(logprobs=True, top_logprobs=2)
    results = llm.batch(["Say hello.", "Name a colour."], config={"callbacks": [handler]})
    assert len(results) == 2 and len(records) == 4
    by_run: dict[uuid.UUID, list[ResponseRecord]] = {}
    for record in records:
        by_run.setdefault(record.run_id, []).append(record)
    assert len(by_run) == 2
    for run_records in by_run.values():
        assert sorted(r.choice_index for r in run_records) == [0, 1]
        for r in run_records:
            assert r.logprobs == "present" and r.report is not None
            assert r.report.token_count == len(r.tokens) > 0


def test_prompt_model_parser_chain(chat_model: Any) -> None:
    handler, records = make_handler()
    chain = (ChatPromptTemplate.from_messages([("human", "Translate to French: {text}")])
             | chat_model().bind(logprobs=True, top_logprobs=TOP) | StrOutputParser())
    output = chain.invoke({"text": "good morning"}, config={"callbacks": [handler]})
    [record] = records
    assert record.text == output and record.parent_run_id is not None
    assert record.report is not None and record.report.token_count > 0


def test_many_concurrent_astreams_keep_their_own_tokens(chat_model: Any) -> None:
    handler, records = make_handler()
    llm = chat_model(max_tokens=10).bind(logprobs=True, top_logprobs=2)
    questions = [f"Count from {i} to {i + 3}." for i in range(24)]

    async def one(question: str) -> tuple[str, str]:
        chunks = [str(c.content) async for c in llm.astream(question, config={"callbacks": [handler]})]
        return question, "".join(chunks)

    async def all_of_them() -> list[tuple[str, str]]:
        return await asyncio.gather(*(one(q) for q in questions))

    texts = sorted(text for _, text in asyncio.run(all_of_them()))
    assert len(records) == 24 and handler.open_runs == 0
    assert sorted(r.text or "" for r in records) == texts
    for r in records:
        assert r.status == "ok" and r.report is not None
        assert r.report.token_count == len(r.tokens) and "".join(t.token or "" for t in r.tokens) == r.text


def test_stream_broken_off_after_five_chunks_is_cancelled_and_scored(chat_model: Any) -> None:
    handler, records = make_handler()
    llm = chat_model(max_tokens=40).bind(logprobs=True, top_logprobs=TOP)
    seen_with_logprobs = 0
    stream = llm.stream("Write a long story about a dragon.", config={"callbacks": [handler]})
    for i, chunk in enumerate(stream):
        seen_with_logprobs += bool(chunk.response_metadata.get("logprobs"))
        if i == 4:
            break
    stream.close()
    [record] = records
    assert record.status == "cancelled" and record.error_type is None
    assert record.report is not None and record.report.token_count == seen_with_logprobs >= 4
    assert handler.open_runs == 0


def test_async_stream_broken_off_is_cancelled(chat_model: Any) -> None:
    handler, records = make_handler()
    llm = chat_model(max_tokens=60).bind(logprobs=True, top_logprobs=2)

    async def main() -> int:
        stream = llm.astream("Write a long poem.", config={"callbacks": [handler]})
        seen = 0
        async for chunk in stream:
            seen += bool(chunk.response_metadata.get("logprobs"))
            if seen == 3:
                break
        await stream.aclose()
        return seen

    seen = asyncio.run(main())
    [record] = records
    assert record.status == "cancelled" and record.report is not None
    assert record.report.token_count == seen


def test_server_error_is_status_error_and_the_app_sees_its_exception(chat_model: Any) -> None:
    handler, records = make_handler()
    llm = chat_model().bind(logprobs=True)
    too_long = "word " * 6000  # more than one slot's context: the server answers 400
    with pytest.raises(openai.BadRequestError) as raised:
        llm.invoke(too_long, config={"callbacks": [handler]})
    [record] = records
    cls = type(raised.value)
    assert record.status == "error" and record.error_type == f"{cls.__module__}.{cls.__qualname__}"
    assert record.report is None and record.logprobs == "not_returned"
    assert not handler.errors


def test_call_without_logprobs_is_not_requested(chat_model: Any) -> None:
    handler, records = make_handler()
    chat_model(max_tokens=5).invoke("hi", config={"callbacks": [handler]})
    [record] = records
    assert record.logprobs == "not_requested" and record.report is None and record.status == "ok"


def test_legacy_completions_class(local_model: LocalModelServer) -> None:
    from langchain_openai import OpenAI

    handler, records = make_handler()
    llm = OpenAI(model=MODEL_NAME, base_url=local_model.base_url, api_key=SecretStr("unused"), temperature=0,
                 max_tokens=8, logprobs=3, max_retries=0)
    text = llm.invoke("The capital of France is", config={"callbacks": [handler]})
    streamed = "".join(llm.stream("The capital of France is", config={"callbacks": [handler]}))
    assert [r.start.kind for r in records] == ["llm", "llm"]
    for record, expected_text in zip(records, (text, streamed), strict=True):
        assert record.logprobs == "present" and record.report is not None
        assert record.report.token_count > 0
        assert "".join(t.token or "" for t in record.tokens).startswith(expected_text)


def test_asked_but_nothing_came_is_not_returned() -> None:
    """A provider that ignores the logprobs request (recorded LLMResult, no server needed)."""
    handler, records = make_handler()
    run_id = uuid.uuid4()
    handler.on_chat_model_start({"name": "ChatX"}, [[]], run_id=run_id,
                                invocation_params={"logprobs": True, "top_logprobs": 3},
                                metadata={"ls_provider": "anthropic", "ls_model_name": "claude"})
    handler.on_llm_end(LLMResult(generations=[[ChatGeneration(message=AIMessage(content="hi"))]]), run_id=run_id)
    [record] = records
    assert record.logprobs == "not_returned" and record.report is None
    assert record.provider == "anthropic" and record.model == "claude"


def test_time_to_first_token_is_the_first_non_empty_token_of_each_streamed_run() -> None:
    handler, records = make_handler()
    streamed, invoked = uuid.uuid4(), uuid.uuid4()
    started_before = time.monotonic_ns()
    for run_id in (streamed, invoked):
        handler.on_chat_model_start({}, [[]], run_id=run_id, invocation_params={})
    started_after = time.monotonic_ns()
    handler.on_llm_new_token("", run_id=streamed)  # the role chunk carries no text
    time.sleep(0.01)
    before = time.monotonic_ns()
    handler.on_llm_new_token("Hel", run_id=streamed)
    after = time.monotonic_ns()
    handler.on_llm_new_token("lo", run_id=streamed)
    handler.on_llm_new_token("x", run_id=uuid.uuid4())  # a run we never saw: ignored
    for run_id in (streamed, invoked):
        handler.on_llm_end(LLMResult(generations=[[ChatGeneration(message=AIMessage(content="Hello"))]]),
                           run_id=run_id)
    by_run = {r.start.run_id: r for r in records}
    assert by_run[invoked].first_token_at_ns is None and by_run[invoked].time_to_first_token_ns is None
    record = by_run[streamed]
    ttft = record.time_to_first_token_ns
    assert ttft is not None and before - started_after <= ttft <= after - started_before  # monotonic
    assert record.first_token_at_ns == record.start.started_at_ns + ttft  # a wall-clock timestamp
    assert record.time_to_first_token_seconds == ttft / 1e9
    assert record.duration_ns is not None and record.duration_ns >= ttft
    assert handler.open_runs == 0 and not handler.errors


def test_a_failing_on_report_does_not_reach_the_app(chat_model: Any, caplog: pytest.LogCaptureFixture) -> None:
    def explode(record: ResponseRecord) -> None:
        raise RuntimeError("boom")

    handler = ConfidenceCallbackHandler(exporters=(), on_report=explode)
    llm = chat_model(max_tokens=4).bind(logprobs=True)
    for _ in range(3):
        assert llm.invoke("hi", config={"callbacks": [handler]}).content
    assert handler.errors["on_report"] == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("on_report failed (RuntimeError)" in m for m in warnings) == 1  # logged once
    assert not any("boom" in m for m in warnings)  # an exception's message may quote content


def test_runs_that_never_end_are_evicted_and_counted() -> None:
    handler, records = make_handler(max_open_runs=3)
    for _ in range(5):
        handler.on_chat_model_start({}, [[]], run_id=uuid.uuid4(), invocation_params={})
    assert handler.open_runs == 3 and handler.evicted_runs == 2 and records == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"low_confidence_threshold": 2}, "low_confidence_threshold"),
    ({"max_open_runs": 0}, "max_open_runs"),
    ({"on_report": "print"}, "on_report"),
    ({"exporters": [object()]}, "export"),
])
def test_bad_arguments_are_clear_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        ConfidenceCallbackHandler(**kwargs)
