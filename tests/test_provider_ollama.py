"""ChatOllama through the real ``langchain-ollama`` and ``ollama`` client packages, against a
loopback Ollama ``/api/chat`` (NDJSON, a top-level ``logprobs`` list per line, no bytes) answered by
the bundled model (tests/provider_support.ollama_proxy). Expected figures come from what that
server sent."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from observability import ConfidenceCallbackHandler, ResponseRecord
from observability.demo.model_server import MODEL_NAME, LocalModelServer
from tests.provider_support import ollama_proxy

QUESTION = "What is the capital of France?"


def assert_record_is(record: ResponseRecord, sent: list[dict[str, Any]], top: int) -> None:
    assert sent, "the server sent no logprobs: nothing to compare"
    assert record.logprobs == "present" and record.start.logprobs_requested
    assert [(t.token, t.logprob) for t in record.tokens] == [(e["token"], e["logprob"]) for e in sent]
    assert all(len(t.top_logprobs) == top for t in record.tokens)
    assert [t.top_logprobs[0] for t in record.tokens] == [
        max(((a["token"], a["logprob"]) for a in e["top_logprobs"]), key=lambda p: p[1]) for e in sent]
    logprobs = [e["logprob"] for e in sent]
    assert record.report is not None and record.report.token_count == len(sent)
    assert math.isclose(record.report.sequence_logprob, math.fsum(logprobs), rel_tol=1e-9)
    assert math.isclose(record.report.min_token_probability, math.exp(min(logprobs)), rel_tol=1e-9)


@pytest.mark.real_model
def test_chat_ollama_invoke_stream_and_async_record_what_the_server_sent(local_model: LocalModelServer) -> None:
    from langchain_ollama import ChatOllama

    records: list[ResponseRecord] = []
    config = {"callbacks": [ConfidenceCallbackHandler(exporters=(), on_report=records.append)]}
    with ollama_proxy(local_model.base_url) as server:
        model = ChatOllama(model=MODEL_NAME, base_url=server["host"], logprobs=True, top_logprobs=3,
                           temperature=0, num_predict=12)

        async def asynchronous() -> tuple[str, str]:
            answer = await model.ainvoke(QUESTION, config=config)
            return answer.text, "".join([chunk.text async for chunk in model.astream(QUESTION, config=config)])

        invoked = model.invoke(QUESTION, config=config).text
        streamed = "".join(chunk.text for chunk in model.stream(QUESTION, config=config))
        async_invoked, async_streamed = asyncio.run(asynchronous())
        plain = ChatOllama(model=MODEL_NAME, base_url=server["host"], temperature=0, num_predict=12)
        plain.invoke(QUESTION, config=config)
        bodies, sent = server["bodies"], server["sent"]

    assert [(b.get("logprobs"), b.get("top_logprobs")) for b in bodies] == [(True, 3)] * 4 + [(None, None)]
    assert invoked == streamed == async_invoked == async_streamed
    for record, entries in zip(records[:4], sent[:4], strict=True):
        assert record.text == invoked
        assert_record_is(record, entries, top=3)
    assert records[4].logprobs == "not_requested"
