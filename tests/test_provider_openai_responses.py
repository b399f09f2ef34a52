"""The OpenAI Responses API through the real ``ChatOpenAI``: with the enabling option, requests ask
for logprobs and the logprobs OpenAI sends reach our records, on invoke, stream, ainvoke and
astream, though langchain-openai drops them (langchain#36211). The provider is
``tests/provider_support.responses_proxy``: the bundled model's real logprobs as Responses output
and stream events; expected figures are computed here from what that proxy sent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration
from langchain_core.runnables import RunnableConfig
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models import base as openai_base
from pydantic import SecretStr

from observability import ConfidenceCallbackHandler, ResponseRecord
from observability.core.text import token_offsets
from observability.demo.model_server import MODEL_NAME, LocalModelServer
from observability.langchain import enable_logprobs as patch
from observability.langchain.payload import logprobs_payload
from tests.attach_support import refusing_proxy
from tests.provider_support import assert_record_is, every_way, responses_proxy
from tests.test_core_extract import seed_korean_payload

QUESTION = "What is the capital of France?"
RESPONSES_LOGPROBS = "message.output_text.logprobs"


@pytest.fixture
def reports() -> Iterator[tuple[ConfidenceCallbackHandler, list[ResponseRecord]]]:
    records: list[ResponseRecord] = []
    yield ConfidenceCallbackHandler(exporters=(), on_report=records.append), records


def responses_model(base_url: str, **kwargs: Any) -> ChatOpenAI:
    options: dict[str, Any] = {"model": MODEL_NAME, "base_url": base_url, "api_key": SecretStr("unused"),
                               "use_responses_api": True, "temperature": 0, "max_tokens": 12, "timeout": 120,
                               "max_retries": 0, "http_async_client": httpx.AsyncClient(timeout=120)}
    return ChatOpenAI(**{**options, **kwargs})


@pytest.mark.real_model
def test_enabled_option_asks_and_records_match_what_the_provider_sent(
        local_model: LocalModelServer, reports: Any) -> None:
    handler, records = reports
    config: RunnableConfig = {"callbacks": [handler]}
    with responses_proxy(local_model.base_url) as proxy:
        model = responses_model(proxy["base_url"])
        with patch.logprobs_enabled(top_logprobs=3):
            answers = every_way(model, QUESTION, config)
        after = model.invoke(QUESTION, config=config)  # outside the block: the app's request again
        bodies, sent = proxy["bodies"], proxy["sent"]

    assert [(b.get("include"), b.get("top_logprobs"), bool(b.get("stream"))) for b in bodies] == [
        ([RESPONSES_LOGPROBS], 3, False), ([RESPONSES_LOGPROBS], 3, True),
        ([RESPONSES_LOGPROBS], 3, False), ([RESPONSES_LOGPROBS], 3, True), (None, None, False)]
    assert answers == [after.text] * 4
    assert [r.text for r in records] == [after.text] * 5
    for record, sent_entries in zip(records[:4], sent[:4], strict=True):
        assert_record_is(record, sent_entries, top=3)
    # the streamed deltas carry no bytes: tokens whole characters here, so their bytes are their UTF-8
    assert all(t.bytes == (t.token or "").encode() for r in records[:4] for t in r.tokens)
    assert records[4].logprobs == "not_requested" and records[4].tokens == ()
    assert not patch.is_patched()


@pytest.mark.real_model
def test_what_the_app_asked_for_is_kept_and_recovered(local_model: LocalModelServer, reports: Any) -> None:
    handler, records = reports
    config: RunnableConfig = {"callbacks": [handler]}
    with responses_proxy(local_model.base_url) as proxy:
        model = responses_model(proxy["base_url"], include=[RESPONSES_LOGPROBS], top_logprobs=2)
        without_option = model.invoke(QUESTION, config=config)
        with patch.logprobs_enabled(top_logprobs=4):
            model.invoke(QUESTION, config=config)
            "".join(chunk.text for chunk in model.stream(QUESTION, config=config))
        bodies, sent = proxy["bodies"], proxy["sent"]
    assert [(b["include"], b["top_logprobs"]) for b in bodies] == [([RESPONSES_LOGPROBS], 2)] * 3
    # Without the option langchain-openai drops what was sent: asked, none reached LangChain.
    assert sent[0] and records[0].logprobs == "not_returned" and records[0].text == without_option.text
    assert_record_is(records[1], sent[1], top=2)
    assert_record_is(records[2], sent[2], top=2)


def test_byte_split_tokens_of_a_stream_get_the_ranges_of_the_same_answer_invoked(reports: Any) -> None:
    # OpenAI's recorded Korean answer: 민 and 국 arrive as UTF-8 byte pieces, spelled "\\xeb\\xaf" + "\\xbc".
    handler, records = reports
    config: RunnableConfig = {"callbacks": [handler]}
    entries = seed_korean_payload()["content"]
    with responses_proxy("", canned=entries) as proxy, patch.logprobs_enabled(top_logprobs=0):
        model = responses_model(proxy["base_url"])
        invoked = model.invoke(QUESTION, config=config).text
        streamed = "".join(chunk.text for chunk in model.stream(QUESTION, config=config))
        delta_tokens = [e["token"] for e in proxy["sent"][1]]
    text = "대한민국의 수도는 서울입니다."
    assert invoked == streamed == text
    assert "\\xeb\\xaf" in delta_tokens and all("bytes" not in e for e in proxy["sent"][1])
    whole, pieces = records
    assert [t.bytes for t in whole.tokens] == [bytes(e["bytes"]) for e in entries]
    assert [t.bytes for t in pieces.tokens] == [bytes(e["bytes"]) for e in entries]
    assert token_offsets(pieces.tokens) == token_offsets(whole.tokens)
    assert token_offsets(pieces.tokens)[0] == text
    assert token_offsets(pieces.tokens)[1][2:4] == [(2, 3), (2, 3)]  # 민's two pieces both cover 민


def test_a_langchain_openai_that_keeps_logprobs_itself_is_read_once(
        monkeypatch: pytest.MonkeyPatch, reports: Any) -> None:
    # As langchain#36371 would: the result already carries the logprobs in response_metadata.
    handler, records = reports
    original = openai_base._construct_lc_result_from_responses_api

    def upstream_fixed(response: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(response, *args, **kwargs)
        for output in response.output:
            for part in output.content:
                result.generations[0].message.response_metadata["logprobs"] = [
                    lp.model_dump() for lp in part.logprobs or ()]
        return result

    monkeypatch.setattr(openai_base, "_construct_lc_result_from_responses_api", upstream_fixed)
    entries = seed_korean_payload()["content"]
    with responses_proxy("", canned=entries) as proxy, patch.logprobs_enabled():
        responses_model(proxy["base_url"]).invoke(QUESTION, config={"callbacks": [handler]})
    assert openai_base._construct_lc_result_from_responses_api is upstream_fixed  # ours taken off again
    assert [t.logprob for t in records[0].tokens] == [e["logprob"] for e in entries]


def test_logprobs_on_content_blocks_are_read() -> None:
    # Where a langchain-openai reading them itself may put them: on the output_text content blocks.
    first, second = seed_korean_payload()["content"][:2], seed_korean_payload()["content"][2:]
    message = AIMessage(content=[{"type": "text", "text": "a", "logprobs": first},
                                 {"type": "function_call", "name": "f"},
                                 {"type": "text", "text": "b", "logprobs": second}])
    assert logprobs_payload(ChatGeneration(message=message)) == first + second


def test_an_unknown_langchain_openai_leaves_responses_alone_with_one_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(openai_base, "_convert_responses_chunk_to_generation_chunk", lambda chunk, state: None)
    monkeypatch.setattr(patch, "_warned", set())
    caplog.set_level(logging.WARNING, logger="observability")
    model = ChatOpenAI(model="gpt-4.1-mini", api_key=SecretStr("unused"), base_url="http://127.0.0.1:9/v1",
                       use_responses_api=True)
    chat = ChatOpenAI(model="gpt-4.1-mini", api_key=SecretStr("unused"), base_url="http://127.0.0.1:9/v1")
    for _ in range(2):
        with patch.logprobs_enabled(top_logprobs=2):
            assert patch.is_patched() and not patch.responses_patched()
            payload = model._get_request_payload(QUESTION)
            params = model._get_invocation_params()
            assert chat._get_request_payload(QUESTION)["top_logprobs"] == 2
    assert "include" not in payload and "top_logprobs" not in payload and "include" not in params
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert warnings[0].startswith("observability: OpenAI Responses API requests are left alone and their logprobs "
                                  "not recovered: langchain_openai.chat_models.base."
                                  "_convert_responses_chunk_to_generation_chunk does not take the arguments")
    assert f"(langchain-openai {patch._version('langchain-openai')}," in warnings[0]
    assert not patch.is_patched()


@pytest.mark.parametrize("model_name", ["o3-mini", "gpt-5"])
def test_responses_models_known_to_reject_logprobs_are_left_alone(model_name: str) -> None:
    model = ChatOpenAI(model=model_name, api_key=SecretStr("unused"), base_url="http://127.0.0.1:9/v1",
                       use_responses_api=True)
    with patch.logprobs_enabled():
        payload = model._get_request_payload(QUESTION)
    assert "include" not in payload and "top_logprobs" not in payload


def test_the_apps_include_list_is_extended_not_replaced() -> None:
    model = ChatOpenAI(model="gpt-4.1-mini", api_key=SecretStr("unused"), base_url="http://127.0.0.1:9/v1",
                       include=["reasoning.encrypted_content"])
    with patch.logprobs_enabled(top_logprobs=2):
        payload = model._get_request_payload(QUESTION)
        params = model._get_invocation_params()
    assert payload["include"] == params["include"] == ["reasoning.encrypted_content", RESPONSES_LOGPROBS]
    assert payload["top_logprobs"] == params["top_logprobs"] == 2
    assert model.include == ["reasoning.encrypted_content"]  # the model's own list is not changed
    assert "logprobs" not in payload  # the Responses API has no such parameter


@pytest.mark.real_model
def test_a_provider_refusing_responses_logprobs_does_not_fail_the_stream(
        local_model: LocalModelServer, reports: Any) -> None:
    # llama.cpp's own /v1/responses behind a proxy that answers HTTP 400 to any request with logprobs
    handler, records = reports
    config: RunnableConfig = {"callbacks": [handler]}
    with refusing_proxy(local_model.base_url) as proxy:
        sync_model = responses_model(proxy["base_url"], model="refuser-responses-stream", max_tokens=8)
        async_model = responses_model(proxy["base_url"], model="refuser-responses-astream", max_tokens=8)

        async def asynchronous() -> str:
            return "".join([chunk.text async for chunk in async_model.astream(QUESTION, config=config)])

        before = patch.stats()["refusals"]
        with patch.logprobs_enabled(top_logprobs=3):
            streamed = "".join(chunk.text for chunk in sync_model.stream(QUESTION, config=config))
            async_streamed = asyncio.run(asynchronous())
        asked = [("top_logprobs" in body, RESPONSES_LOGPROBS in (body.get("include") or ()))
                 for body in proxy["bodies"]]
    assert streamed == async_streamed != ""
    assert patch.stats()["refusals"] - before == 2
    assert asked == [(True, True), (False, False)] * 2
    assert [(r.status, r.logprobs) for r in records] == [("ok", "not_returned")] * 2


def test_hostile_logprobs_are_skipped_and_counted_and_the_answer_is_unchanged(reports: Any) -> None:
    handler, records = reports
    config: RunnableConfig = {"callbacks": [handler]}
    good = {"token": "ok", "bytes": [111, 107], "logprob": -0.5, "top_logprobs": [{"token": "ok", "logprob": -0.5}]}
    hostile: list[dict[str, Any]] = [good,
               {"token": "a", "bytes": [97], "logprob": float("nan"), "top_logprobs": []},
               {"token": "b", "bytes": [98], "logprob": 5.0, "top_logprobs": []},
               {"token": None, "bytes": [], "logprob": None, "top_logprobs": [{"token": "x", "logprob": "high"}]},
               good]
    with responses_proxy("", canned=hostile) as proxy, patch.logprobs_enabled():
        model = responses_model(proxy["base_url"])
        invoked = model.invoke(QUESTION, config=config).text
        streamed = "".join(chunk.text for chunk in model.stream(QUESTION, config=config))
    assert invoked == streamed == "okabok"
    assert not handler.errors
    for record in records:
        assert record.status == "ok" and record.logprobs == "present"
        assert [t.token for t in record.tokens] == ["ok", "ok"] and record.tokens.skipped == 3


def test_our_failure_in_the_recovery_leaves_the_answer_as_it_was(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, reports: Any) -> None:
    from observability.langchain import responses_logprobs as _responses_logprobs

    def exploding(*args: Any) -> list[dict[str, Any]]:
        raise RuntimeError("our own bug")

    handler, records = reports
    monkeypatch.setattr(_responses_logprobs, "result_entries", exploding)
    monkeypatch.setattr(_responses_logprobs, "delta_entries", exploding)
    monkeypatch.setattr(patch, "_failed_places", set())
    caplog.set_level(logging.WARNING, logger="observability")
    entries = seed_korean_payload()["content"]
    with responses_proxy("", canned=entries) as proxy, patch.logprobs_enabled():
        model = responses_model(proxy["base_url"])
        answers: list[str] = [str(model.invoke(QUESTION, config={"callbacks": [handler]}).text) for _ in range(2)]
        answers += ["".join(c.text for c in model.stream(QUESTION, config={"callbacks": [handler]})) for _ in range(2)]
    assert answers == ["대한민국의 수도는 서울입니다."] * 4
    assert [r.logprobs for r in records] == ["not_returned"] * 4 and not handler.errors
    assert sorted(r.getMessage() for r in caplog.records) == [
        f"observability: the logprobs patch failed in {where} (RuntimeError); the app's call goes on as if "
        "unpatched. Further failures here are not logged."
        for where in ("_construct_lc_result_from_responses_api", "_convert_responses_chunk_to_generation_chunk")]


def test_a_streaming_ui_and_a_second_handler_get_the_same_recovered_tokens() -> None:
    # astream_events (what a streaming UI reads), with a handler passed in and one from observe_confidence()
    from observability import observe_confidence

    passed: list[ResponseRecord] = []
    blocked: list[ResponseRecord] = []
    entries = seed_korean_payload()["content"]
    with responses_proxy("", canned=entries) as proxy, \
            observe_confidence(exporters=(), on_report=blocked.append, enable_logprobs=True, top_logprobs=0):
        model = responses_model(proxy["base_url"])

        async def ui() -> str:
            config: RunnableConfig = {"callbacks": [ConfidenceCallbackHandler(exporters=(), on_report=passed.append)]}
            return "".join([event["data"]["chunk"].text async for event in model.astream_events(
                QUESTION, config=config, version="v2") if event["event"] == "on_chat_model_stream"])

        shown = asyncio.run(ui())
    assert shown == "대한민국의 수도는 서울입니다."
    for records in (passed, blocked):
        (record,) = records
        assert [t.bytes for t in record.tokens] == [bytes(e["bytes"]) for e in entries]
        assert [t.logprob for t in record.tokens] == [e["logprob"] for e in entries]
        assert token_offsets(record.tokens)[0] == shown
