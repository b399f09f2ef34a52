"""ChatFireworks through the real ``langchain-fireworks`` and ``fireworks-ai`` client packages. Fireworks
speaks the OpenAI Chat Completions wire format, so its loopback server is the bundled model's own
llama.cpp server (the client posts to ``{base_url}/v1/chat/completions``); expected figures come
from a raw request to that server, made here without LangChain."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from observability import ConfidenceCallbackHandler, ResponseRecord
from observability._local_model import MODEL_NAME, LocalModelServer
from tests.conftest import raw_chat_completion, raw_chat_stream

QUESTION = "What is the capital of France?"
MAX_TOKENS = 12


def assert_record_is(record: ResponseRecord, sent: list[dict[str, Any]], top: int) -> None:
    assert record.logprobs == "present" and record.start.logprobs_requested
    assert [t.token for t in record.tokens] == [e["token"] for e in sent]
    assert [t.bytes for t in record.tokens] == [bytes(e["bytes"]) for e in sent]
    # the streamed and non-streamed paths of llama.cpp agree to the last few digits only (NOTES.md)
    assert all(math.isclose(t.logprob, e["logprob"], abs_tol=1e-4) for t, e in zip(record.tokens, sent, strict=True))
    assert all(len(t.top_logprobs) == top for t in record.tokens)
    assert record.report is not None
    assert math.isclose(record.report.sequence_logprob, math.fsum(e["logprob"] for e in sent), abs_tol=1e-3)


@pytest.mark.real_model
def test_chat_fireworks_invoke_stream_and_async_record_what_the_server_sent(local_model: LocalModelServer) -> None:
    from langchain_fireworks import ChatFireworks

    records: list[ResponseRecord] = []
    config = {"callbacks": [ConfidenceCallbackHandler(exporters=(), on_report=records.append)]}
    model = ChatFireworks(model=MODEL_NAME, base_url=local_model.base_url.removesuffix("/v1"), api_key="unused",
                          temperature=0, max_tokens=MAX_TOKENS, max_retries=0).bind(logprobs=True, top_logprobs=3)

    async def asynchronous() -> tuple[str, str]:
        answer = await model.ainvoke(QUESTION, config=config)
        return answer.text, "".join([chunk.text async for chunk in model.astream(QUESTION, config=config)])

    invoked = model.invoke(QUESTION, config=config).text
    streamed = "".join(chunk.text for chunk in model.stream(QUESTION, config=config))
    async_invoked, async_streamed = asyncio.run(asynchronous())

    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": QUESTION}], "temperature": 0,
            "max_tokens": MAX_TOKENS, "logprobs": True, "top_logprobs": 3}
    raw = raw_chat_completion(local_model.base_url, body)
    raw_stream = [e for event in raw_chat_stream(local_model.base_url, body) for choice in event["choices"]
                  for e in (choice.get("logprobs") or {}).get("content") or ()]
    assert invoked == streamed == async_invoked == async_streamed == raw["choices"][0]["message"]["content"]
    for record, sent in zip(records, [raw["choices"][0]["logprobs"]["content"], raw_stream] * 2, strict=True):
        assert_record_is(record, sent, top=3)
