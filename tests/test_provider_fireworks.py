"""ChatFireworks through the real ``langchain-fireworks`` and ``fireworks-ai`` client packages. Fireworks
speaks the OpenAI Chat Completions wire format, so its loopback server is the bundled model's own
llama.cpp server (the client posts to ``{base_url}/v1/chat/completions``); expected figures come
from a raw request to that server, made here without LangChain."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from observability import ConfidenceCallbackHandler, ResponseRecord
from observability.demo.model_server import MODEL_NAME, LocalModelServer
from tests.conftest import raw_chat_completion, raw_chat_stream
from tests.provider_support import assert_record_is, every_way

QUESTION = "What is the capital of France?"
MAX_TOKENS = 12


@pytest.mark.real_model
def test_chat_fireworks_invoke_stream_and_async_record_what_the_server_sent(local_model: LocalModelServer) -> None:
    from langchain_fireworks import ChatFireworks

    records: list[ResponseRecord] = []
    config = {"callbacks": [ConfidenceCallbackHandler(exporters=(), on_report=records.append)]}
    model = ChatFireworks(model=MODEL_NAME, base_url=local_model.base_url.removesuffix("/v1"),
                          api_key=SecretStr("unused"), temperature=0, max_tokens=MAX_TOKENS,
                          max_retries=0).bind(logprobs=True, top_logprobs=3)
    answers = every_way(model, QUESTION, config)

    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": QUESTION}], "temperature": 0,
            "max_tokens": MAX_TOKENS, "logprobs": True, "top_logprobs": 3}
    raw = raw_chat_completion(local_model.base_url, body)
    raw_stream = [e for event in raw_chat_stream(local_model.base_url, body) for choice in event["choices"]
                  for e in (choice.get("logprobs") or {}).get("content") or ()]
    assert answers == [raw["choices"][0]["message"]["content"]] * 4
    for record, sent in zip(records, [raw["choices"][0]["logprobs"]["content"], raw_stream] * 2, strict=True):
        assert [t.bytes for t in record.tokens] == [bytes(e["bytes"]) for e in sent]
        # a later request to the same server: equal to the last digits only (parallel slots batch differently)
        assert_record_is(record, sent, top=3, abs_tol=1e-4)
