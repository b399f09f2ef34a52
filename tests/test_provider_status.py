"""The ``logprobs`` status for every way of asking, through the real integration classes: constructor
fields, ``bind``, ``model_kwargs``, ``include``. Asked and none came back is ``not_returned``, never
``not_requested``. The provider is a loopback server that answers without logprobs (the canned
OpenAI-compatible one; an Ollama ``/api/chat`` that sends none), so every call succeeds bare."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable
from pydantic import SecretStr

from observability import ConfidenceCallbackHandler, ResponseRecord
from observability.langchain.payload import logprobs_requested
from tests.http_support import serving
from tests.provider_support import ANSWER, JsonHandler, canned_provider

RESPONSES_LOGPROBS = "message.output_text.logprobs"


@pytest.fixture(scope="module")
def urls() -> Iterator[dict[str, str]]:
    class Ollama(JsonHandler):  # answers every /api/chat with one NDJSON line and no logprobs
        def do_POST(self) -> None:
            self.read_json()
            line = {"model": "m", "created_at": "2026-12-07T00:00:00Z", "done": True, "done_reason": "stop",
                    "message": {"role": "assistant", "content": ANSWER}}
            self.send(200, "application/x-ndjson", (json.dumps(line) + "\n").encode())

    with canned_provider() as openai_compatible, serving(Ollama) as ollama:
        yield {"openai": openai_compatible["base_url"], "root": openai_compatible["base_url"].removesuffix("/v1"),
               "ollama": ollama}


def openai(**kwargs: Any) -> Callable[[dict[str, str]], BaseChatModel]:
    from langchain_openai import ChatOpenAI

    return lambda urls: ChatOpenAI(model="m", base_url=urls["openai"], api_key=SecretStr("unused"),
                                   max_retries=0, **kwargs)


def ollama(**kwargs: Any) -> Callable[[dict[str, str]], BaseChatModel]:
    from langchain_ollama import ChatOllama

    return lambda urls: ChatOllama(model="m", base_url=urls["ollama"], **kwargs)


def fireworks(**kwargs: Any) -> Callable[[dict[str, str]], BaseChatModel]:
    from langchain_fireworks import ChatFireworks

    return lambda urls: ChatFireworks(model="m", base_url=urls["root"], api_key=SecretStr("unused"),
                                      max_retries=0, **kwargs)


# (the model, what .bind() adds, asked?)
WAYS: list[Any] = [
    pytest.param(openai(), {}, False, id="openai-plain"),
    pytest.param(openai(logprobs=True), {}, True, id="openai-constructor"),
    pytest.param(openai(), {"logprobs": True, "top_logprobs": 2}, True, id="openai-bind"),
    pytest.param(openai(model_kwargs={"top_logprobs": 2, "logprobs": True}), {}, True, id="openai-model_kwargs"),
    pytest.param(openai(logprobs=True), {"logprobs": False}, False, id="openai-bind-false-wins"),
    pytest.param(openai(logprobs=False), {}, False, id="openai-constructor-false"),
    pytest.param(ollama(), {}, False, id="ollama-plain"),
    pytest.param(ollama(logprobs=True), {}, True, id="ollama-constructor"),
    pytest.param(ollama(top_logprobs=3), {}, True, id="ollama-constructor-top-only"),
    pytest.param(ollama(), {"logprobs": True}, True, id="ollama-bind"),
    pytest.param(ollama(logprobs=True, top_logprobs=2), {"logprobs": False, "top_logprobs": None}, False,
                 id="ollama-bind-false-wins"),
    pytest.param(fireworks(), {}, False, id="fireworks-plain"),
    pytest.param(fireworks(logprobs=True), {}, True, id="fireworks-constructor"),
    pytest.param(fireworks(), {"logprobs": True, "top_logprobs": 2}, True, id="fireworks-bind"),
]


@pytest.mark.filterwarnings("ignore:.*logprobs is not default parameter")  # ChatFireworks moves it to model_kwargs
@pytest.mark.filterwarnings("ignore:.*should be specified explicitly")  # ChatOpenAI moves model_kwargs to fields
@pytest.mark.filterwarnings("ignore:.*top_logprobs. is set but .logprobs. was not explicitly enabled")
@pytest.mark.parametrize(("make", "bound", "asked"), WAYS)
def test_asked_and_none_came_back_is_not_returned(
        urls: dict[str, str], make: Callable[[dict[str, str]], BaseChatModel], bound: dict[str, Any],
        asked: bool) -> None:
    records: list[ResponseRecord] = []
    handler = ConfidenceCallbackHandler(exporters=(), on_report=records.append)
    model: Runnable[Any, Any] = make(urls).bind(**bound) if bound else make(urls)
    assert model.invoke("q", config={"callbacks": [handler]}).text == ANSWER
    (record,) = records
    assert record.status == "ok" and record.start.logprobs_requested is asked
    assert record.logprobs == ("not_returned" if asked else "not_requested")


@pytest.mark.parametrize(("params", "serialized", "asked"), [
    pytest.param({"include": [RESPONSES_LOGPROBS]}, {}, True, id="responses-include"),
    pytest.param({"include": ["reasoning.encrypted_content"]}, {}, False, id="other-include"),
    pytest.param({"response_logprobs": True}, {}, True, id="vertex-generation-config"),
    pytest.param({}, {"type": "constructor", "kwargs": {"logprobs": 5}}, True, id="vertex-constructor-int"),
    pytest.param({"top_logprobs": 0}, {"type": "constructor", "kwargs": {"logprobs": True}}, False,
                 id="params-decide-first"),
    pytest.param({}, {"type": "constructor", "kwargs": {"model_kwargs": {"logprobs": True}}}, True,
                 id="huggingface-model_kwargs"),
    pytest.param({}, {"type": "not_implemented", "repr": "Chat(metadata={'logprobs=True': 1}, model='x')"}, False,
                 id="repr-only-fields"),
    pytest.param({}, {"type": "not_implemented", "repr": "Chat(model='x', top_logprobs=3)"}, True, id="repr-top"),
    pytest.param({}, {"type": "not_implemented", "repr": "ChatLiteLLM(model='x', model_kwargs={'top_logprobs': 3, "
                                                         "'logprobs': True})"}, True, id="litellm-model_kwargs"),
    pytest.param({}, {"type": "not_implemented", "repr": "ChatLiteLLM(model='x', model_kwargs={'logprobs': False})"},
                 False, id="litellm-model_kwargs-false"),
    pytest.param({}, "not a mapping", False, id="junk-serialized"),
    pytest.param(["not", "a", "mapping"], None, False, id="junk-params"),
])
def test_every_place_an_app_asks(params: Any, serialized: Any, asked: bool) -> None:
    assert logprobs_requested(params, serialized) is asked
