"""The opt-in "turn logprobs on" patch: what it adds, what it leaves alone, how it is undone,
and that a provider refusing logprobs does not fail the app's call."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import BaseChatOpenAI
from pydantic import SecretStr

from observability import ConfidenceCallbackHandler, ResponseRecord
from observability.demo.model_server import MODEL_NAME, LocalModelServer
from observability.langchain import enable_logprobs as patch
from tests.attach_support import refusing_proxy
from tests.conftest import raw_chat_completion

MAX_TOKENS = 8
QUESTION = "What is the capital of France?"


@pytest.fixture
def reports() -> Iterator[tuple[ConfidenceCallbackHandler, list[ResponseRecord]]]:
    records: list[ResponseRecord] = []
    yield ConfidenceCallbackHandler(exporters=(), on_report=records.append), records


def originals() -> dict[str, Any]:
    return {name: BaseChatOpenAI.__dict__[name] for name in patch._PATCHED}


@pytest.mark.real_model
def test_enabled_block_asks_for_logprobs_and_they_match_the_raw_response(
        chat_model: Any, local_model: LocalModelServer, reports: Any) -> None:
    handler, records = reports
    model = chat_model(max_tokens=MAX_TOKENS)
    config = {"callbacks": [handler]}
    with patch.logprobs_enabled(top_logprobs=3):
        answer = model.invoke(QUESTION, config=config)
        streamed = "".join(chunk.text for chunk in model.stream(QUESTION, config=config))
    model.invoke(QUESTION, config=config)  # after the block: the request is the app's again

    raw = raw_chat_completion(local_model.base_url, {
        "model": MODEL_NAME, "messages": [{"role": "user", "content": QUESTION}], "temperature": 0,
        "max_tokens": MAX_TOKENS, "logprobs": True, "top_logprobs": 3})
    raw_entries = raw["choices"][0]["logprobs"]["content"]
    invoked, stream_record, after = records
    assert answer.text == raw["choices"][0]["message"]["content"] == streamed
    assert invoked.logprobs == "present" and invoked.start.logprobs_requested
    assert [t.token for t in invoked.tokens] == [e["token"] for e in raw_entries]
    assert all(math.isclose(t.logprob, e["logprob"], abs_tol=1e-4)
               for t, e in zip(invoked.tokens, raw_entries, strict=True))
    assert all(len(t.top_logprobs) == 3 for t in invoked.tokens)
    assert stream_record.logprobs == "present" and all(len(t.top_logprobs) == 3 for t in stream_record.tokens)
    assert after.logprobs == "not_requested" and not after.start.logprobs_requested


@pytest.mark.real_model
def test_what_the_app_asked_for_is_left_alone(chat_model: Any, reports: Any) -> None:
    handler, records = reports
    config = {"callbacks": [handler]}
    with patch.logprobs_enabled(top_logprobs=4):
        chat_model(max_tokens=MAX_TOKENS).bind(logprobs=False).invoke(QUESTION, config=config)
        chat_model(max_tokens=MAX_TOKENS, logprobs=True, top_logprobs=1).invoke(QUESTION, config=config)
    refused, own = records
    assert refused.logprobs == "not_requested"
    assert own.logprobs == "present" and all(len(t.top_logprobs) == 1 for t in own.tokens)


@pytest.mark.parametrize("model_name", ["o3-mini", "gpt-5", "gpt-4o-search-preview", "deepseek-reasoner"])
def test_models_known_to_reject_logprobs_are_left_alone(model_name: str) -> None:
    model = ChatOpenAI(model=model_name, api_key=SecretStr("unused"), base_url="http://127.0.0.1:9/v1")
    with patch.logprobs_enabled():
        payload = model._get_request_payload([HumanMessage("hi")])
        params = model._get_invocation_params()
    assert "logprobs" not in payload and "top_logprobs" not in payload
    assert "logprobs" not in params


def test_responses_api_requests_ask_in_their_own_words() -> None:
    model = ChatOpenAI(model="gpt-4.1-mini", api_key=SecretStr("unused"), base_url="http://127.0.0.1:9/v1",
                       use_responses_api=True)
    plain = ChatOpenAI(model="gpt-4.1-mini", api_key=SecretStr("unused"), base_url="http://127.0.0.1:9/v1")
    with patch.logprobs_enabled(top_logprobs=2):
        payload = model._get_request_payload([HumanMessage("hi")])
        chat_payload = plain._get_request_payload([HumanMessage("hi")])
    # the Responses API has no `logprobs` parameter (the openai SDK rejects it): include + top_logprobs
    assert "input" in payload and "logprobs" not in payload
    assert payload["include"] == ["message.output_text.logprobs"] and payload["top_logprobs"] == 2
    assert chat_payload["logprobs"] is True and chat_payload["top_logprobs"] == 2


def test_the_patch_is_undone_exactly_when_the_last_user_lets_go() -> None:
    before = originals()
    assert not patch.is_patched()
    patch.enable_logprobs(top_logprobs=2)
    with patch.logprobs_enabled(top_logprobs=1):
        assert all(originals()[name] is not before[name] for name in before)
    assert patch.is_patched()  # the process-wide enabler still holds it
    patch.disable_logprobs()
    assert not patch.is_patched()
    assert originals() == before and all(originals()[name] is before[name] for name in before)
    model = ChatOpenAI(model="gpt-4.1-mini", api_key=SecretStr("unused"), base_url="http://127.0.0.1:9/v1")
    assert "logprobs" not in model._get_request_payload([HumanMessage("hi")])


def test_bad_top_logprobs_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="top_logprobs must be a whole number from 0 to 20"):
        patch.enable_logprobs(top_logprobs=21)
    assert not patch.is_patched()


@pytest.mark.real_model
def test_a_provider_refusing_logprobs_does_not_fail_the_call(
        chat_model: Any, local_model: LocalModelServer, reports: Any) -> None:
    handler, records = reports
    config = {"callbacks": [handler]}
    with refusing_proxy(local_model.base_url) as proxy:
        # one model name per path, so each path meets its own first refusal
        sync_model = chat_model(max_tokens=MAX_TOKENS, base_url=proxy["base_url"], model="refuser-invoke")
        stream_model = chat_model(max_tokens=MAX_TOKENS, base_url=proxy["base_url"], model="refuser-stream")
        async_model = chat_model(max_tokens=MAX_TOKENS, base_url=proxy["base_url"], model="refuser-async")
        before = patch.stats()["refusals"]
        with patch.logprobs_enabled(top_logprobs=3):
            first = sync_model.invoke(QUESTION, config=config)
            second = sync_model.invoke(QUESTION, config=config)  # remembered: not asked again
            streamed = "".join(chunk.text for chunk in stream_model.stream(QUESTION, config=config))
            async_answer = asyncio.run(async_model.ainvoke(QUESTION, config=config))
        bodies = proxy["bodies"]

    expected = raw_chat_completion(local_model.base_url, {
        "model": MODEL_NAME, "messages": [{"role": "user", "content": QUESTION}], "temperature": 0,
        "max_tokens": MAX_TOKENS})["choices"][0]["message"]["content"]
    assert first.text == second.text == streamed == async_answer.text == expected
    assert patch.stats()["refusals"] - before == 3
    asked = [("logprobs" in body, body["model"]) for body in bodies]
    assert asked == [(True, "refuser-invoke"), (False, "refuser-invoke"), (False, "refuser-invoke"),
                     (True, "refuser-stream"), (False, "refuser-stream"),
                     (True, "refuser-async"), (False, "refuser-async")]
    assert [r.logprobs for r in records] == ["not_returned", "not_requested", "not_returned", "not_returned"]
    assert all(r.status == "ok" for r in records)
    assert not patch.is_patched()


@pytest.mark.real_model
def test_other_bad_requests_are_the_apps_and_are_not_retried(
        chat_model: Any, local_model: LocalModelServer) -> None:
    import openai

    with refusing_proxy(local_model.base_url, message="Invalid value for 'messages'") as proxy:
        model = chat_model(max_tokens=MAX_TOKENS, base_url=proxy["base_url"], model="other-error")
        before = patch.stats()["refusals"]
        with patch.logprobs_enabled(), pytest.raises(openai.BadRequestError, match="Invalid value for 'messages'"):
            model.invoke(QUESTION)
        bodies = proxy["bodies"]
    assert len(bodies) == 1
    assert patch.stats()["refusals"] == before
