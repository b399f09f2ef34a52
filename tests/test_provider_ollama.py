"""ChatOllama through the real ``langchain-ollama`` and ``ollama`` client packages, against a
loopback Ollama ``/api/chat`` (NDJSON, a top-level ``logprobs`` list per line, no bytes) answered by
the bundled model (tests/provider_support.ollama_proxy). Expected figures come from what that
server sent."""

from __future__ import annotations

import pytest
from langchain_core.runnables import RunnableConfig

from observability import ConfidenceCallbackHandler, ResponseRecord
from observability.demo.model_server import MODEL_NAME, LocalModelServer
from tests.provider_support import assert_record_is, every_way, ollama_proxy

QUESTION = "What is the capital of France?"


@pytest.mark.real_model
def test_chat_ollama_invoke_stream_and_async_record_what_the_server_sent(local_model: LocalModelServer) -> None:
    from langchain_ollama import ChatOllama

    records: list[ResponseRecord] = []
    config: RunnableConfig = {"callbacks": [ConfidenceCallbackHandler(exporters=(), on_report=records.append)]}
    with ollama_proxy(local_model.base_url) as server:
        model = ChatOllama(model=MODEL_NAME, base_url=server["host"], logprobs=True, top_logprobs=3,
                           temperature=0, num_predict=12)
        answers = every_way(model, QUESTION, config)
        plain = ChatOllama(model=MODEL_NAME, base_url=server["host"], temperature=0, num_predict=12)
        plain.invoke(QUESTION, config=config)
        bodies, sent = server["bodies"], server["sent"]

    assert [(b.get("logprobs"), b.get("top_logprobs")) for b in bodies] == [(True, 3)] * 4 + [(None, None)]
    assert len(set(answers)) == 1
    for record, entries in zip(records[:4], sent[:4], strict=True):
        assert record.text == answers[0]
        assert_record_is(record, entries, top=3)
    assert records[4].logprobs == "not_requested"
