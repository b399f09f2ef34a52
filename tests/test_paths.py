"""Every path LangChain and LangGraph take to a model gives the raw response's numbers.

Each test runs one path on the bundled model and compares the record with the same server's raw
HTTP response, computed here from the JSON (token count, sum of logprobs to 1e-9, min probability):
streamed paths with the raw streamed response, non-streamed paths with the raw non-streamed one
(llama.cpp's non-streamed response has one more entry, the end-of-generation token).
"""

from __future__ import annotations

import asyncio
import json
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from observability import ConfidenceCallbackHandler, ResponseRecord
from observability._local_model import MODEL_NAME, LocalModelServer
from observability.exporters import MetricLabels
from tests.conftest import raw_chat_completion, raw_chat_stream
from tests.http_support import QuietHandler, serving

pytestmark = pytest.mark.real_model

QUESTION = "What is the capital of France? Answer in one sentence."
MAX_TOKENS = 24
TOP = 3
DATED = "smollm2-2024-07-18"


def body() -> dict[str, Any]:
    return {"model": MODEL_NAME, "messages": [{"role": "user", "content": QUESTION}], "temperature": 0,
            "max_tokens": MAX_TOKENS, "logprobs": True, "top_logprobs": TOP}


def streamed_entries(base_url: str) -> list[dict[str, Any]]:
    return [entry for event in raw_chat_stream(base_url, body()) for choice in event.get("choices", [])
            for entry in ((choice.get("logprobs") or {}).get("content") or [])]


def invoked_entries(base_url: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = raw_chat_completion(base_url, body())["choices"][0]["logprobs"]["content"]
    return entries


def assert_figures(record: ResponseRecord, entries: list[dict[str, Any]], status: str = "ok") -> None:
    """The record's report against figures computed here from the raw JSON entries."""
    lps = [entry["logprob"] for entry in entries]
    assert record.status == status and record.logprobs == "present"
    report = record.report
    assert report is not None and report.skipped == 0
    assert report.token_count == len(lps)
    assert report.sequence_logprob is not None and abs(report.sequence_logprob - sum(lps)) <= 1e-9
    assert report.min_token_probability == pytest.approx(math.exp(min(lps)), rel=1e-12)


def handler() -> tuple[ConfidenceCallbackHandler, list[ResponseRecord]]:
    records: list[ResponseRecord] = []
    return ConfidenceCallbackHandler(exporters=(), on_report=records.append), records


def llm_for(chat_model: Any, **kwargs: Any) -> Any:
    return chat_model(max_tokens=MAX_TOKENS, logprobs=True, top_logprobs=TOP, **kwargs)


def one(records: list[ResponseRecord], handler_: ConfidenceCallbackHandler) -> ResponseRecord:
    assert handler_.open_runs == 0 and not handler_.errors
    [record] = records
    return record


async def drain_async(stream: Any) -> None:
    if hasattr(stream, "__await__"):
        stream = await stream
    if hasattr(stream, "__aiter__"):
        async for _ in stream:
            pass
    else:  # a v3 stream object: its output is the finished message
        output = stream.output
        if hasattr(output, "__await__"):
            await output


def drain(stream: Any) -> None:
    if hasattr(stream, "__iter__"):
        for _ in stream:
            pass
    else:
        _ = stream.output


# ---- the chat model on its own ---------------------------------------------------------------
def test_invoke(local_model: LocalModelServer, chat_model: Any) -> None:
    h, records = handler()
    llm_for(chat_model).invoke(QUESTION, config={"callbacks": [h]})
    record = one(records, h)
    assert_figures(record, invoked_entries(local_model.base_url))
    assert record.response_id is not None and record.response_id.startswith("chatcmpl")


def test_batch(local_model: LocalModelServer, chat_model: Any) -> None:
    h, records = handler()
    llm_for(chat_model).batch([QUESTION, QUESTION], config={"callbacks": [h]})
    entries = invoked_entries(local_model.base_url)
    assert len(records) == 2 and h.open_runs == 0 and not h.errors
    for record in records:
        assert_figures(record, entries)


STREAMED: dict[str, Callable[[Any, dict[str, Any]], None]] = {
    "stream": lambda llm, config: drain(llm.stream(QUESTION, config=config)),
    "astream": lambda llm, config: asyncio.run(drain_async(llm.astream(QUESTION, config=config))),
    "astream_events v1": lambda llm, config: asyncio.run(
        drain_async(llm.astream_events(QUESTION, config=config, version="v1"))),
    "astream_events v2": lambda llm, config: asyncio.run(
        drain_async(llm.astream_events(QUESTION, config=config, version="v2"))),
    "stream_events v3": lambda llm, config: drain(llm.stream_events(QUESTION, config=config, version="v3")),
    "astream_events v3": lambda llm, config: asyncio.run(
        drain_async(llm.astream_events(QUESTION, config=config, version="v3"))),
}


@pytest.mark.parametrize("path", list(STREAMED))
def test_streamed_paths(path: str, local_model: LocalModelServer, chat_model: Any) -> None:
    h, records = handler()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # v3 is beta and says so
        STREAMED[path](llm_for(chat_model), {"callbacks": [h]})
    record = one(records, h)
    assert_figures(record, streamed_entries(local_model.base_url))
    assert record.response_id is None or not record.response_id.startswith("lc_"), record.response_id


def test_chain_with_a_parser(local_model: LocalModelServer, chat_model: Any) -> None:
    chain = ChatPromptTemplate.from_messages([("user", "{question}")]) | llm_for(chat_model) | StrOutputParser()
    h, records = handler()
    chain.invoke({"question": QUESTION}, config={"callbacks": [h]})
    assert_figures(one(records, h), invoked_entries(local_model.base_url))
    h, records = handler()
    drain(chain.stream({"question": QUESTION}, config={"callbacks": [h]}))
    assert_figures(one(records, h), streamed_entries(local_model.base_url))


# ---- LangGraph -----------------------------------------------------------------------------------
def graph_of(llm: Any) -> Any:
    from langgraph.graph import START, MessagesState, StateGraph

    def answer(state: MessagesState) -> dict[str, Any]:
        return {"messages": [llm.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    return builder.compile()


GRAPH: dict[str, Callable[[Any, dict[str, Any]], None]] = {
    'stream_mode="messages"': lambda graph, config: drain(
        graph.stream({"messages": [HumanMessage(QUESTION)]}, config=config, stream_mode="messages")),
    'stream_mode="updates" (not streamed)': lambda graph, config: drain(
        graph.stream({"messages": [HumanMessage(QUESTION)]}, config=config, stream_mode="updates")),
    "stream_events v3": lambda graph, config: drain(
        graph.stream_events({"messages": [HumanMessage(QUESTION)]}, config=config, version="v3")),
}


@pytest.mark.parametrize("path", list(GRAPH))
def test_langgraph_paths(path: str, local_model: LocalModelServer, chat_model: Any) -> None:
    h, records = handler()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        GRAPH[path](graph_of(llm_for(chat_model)), {"callbacks": [h]})
    # LangGraph streams the model's tokens in "messages" mode (and v3); "updates" calls it unstreamed
    streamed = "not streamed" not in path
    entries = streamed_entries if streamed else invoked_entries
    assert_figures(one(records, h), entries(local_model.base_url))


# ---- a proxy in front of the model: dated model names, streams cut mid-way -----------------------
@contextmanager
def proxy(upstream: str, *, cut_after_events: int | None = None) -> Iterator[str]:
    """A loopback proxy to the model: answers name the model ``DATED``; with ``cut_after_events``
    a stream sends an error event after that many events and drops the connection."""

    class Handler(QuietHandler):
        protocol_version = "HTTP/1.0"  # the body ends when the connection closes

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            with httpx.Client(timeout=120) as client, client.stream(
                    "POST", f"{upstream}{self.path.removeprefix('/v1')}", json=request) as response:
                self.send_response(response.status_code)
                self.send_header("Content-Type", response.headers.get("content-type", "application/json"))
                self.end_headers()
                if not request.get("stream"):
                    data = json.loads(response.read())
                    data["model"] = DATED
                    self.wfile.write(json.dumps(data).encode())
                    return
                sent = 0
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        if cut_after_events is not None and sent >= cut_after_events:
                            # what a provider sends when generation fails mid-way; then the line drops
                            self.wfile.write(b'data: {"error": {"message": "cut", "type": "server_error"}}\n\n')
                            return
                        event = json.loads(line[6:])
                        event["model"] = DATED
                        line = "data: " + json.dumps(event)
                        sent += 1
                    self.wfile.write(line.encode() + b"\n")
                    self.wfile.flush()

    with serving(Handler) as url:
        yield f"{url}/v1"


def test_a_dated_answer_keeps_the_requested_model_as_the_label(local_model: LocalModelServer,
                                                                 chat_model: Any) -> None:
    h, records = handler()
    with proxy(local_model.base_url) as url:
        llm_for(chat_model, base_url=url).invoke(QUESTION, config={"callbacks": [h]})
        drain(llm_for(chat_model, base_url=url).stream(QUESTION, config={"callbacks": [h]}))
    assert [r.response_model for r in records] == [DATED, DATED]
    labels = MetricLabels()
    assert {labels.values(r) for r in records} == {("openai", MODEL_NAME)}
    assert records[0].start.request_model == MODEL_NAME
