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
import os
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
from observability.demo.model_server import MODEL_NAME, LocalModelServer
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
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]
    print(f"{test}: {report.token_count} tokens (raw {len(lps)}), sum {report.sequence_logprob:.6f} "
          f"(raw {math.fsum(lps):.6f}), status {record.status}")


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


# ---- a proxy in front of the model: dated model names -------------------------------------------
@contextmanager
def proxy(upstream: str) -> Iterator[str]:
    """A loopback proxy to the model whose answers name the model ``DATED``."""

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
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        event = json.loads(line[6:])
                        event["model"] = DATED
                        line = "data: " + json.dumps(event)
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


# ---- a create_agent agent that calls a tool --------------------------------------------------------
# The bundled model's chat template knows no tools, and llama.cpp then ignores `tools` and
# `tool_choice`. So a loopback proxy plays the part of a provider that parses tool calls: a request
# offering tools (before any tool result) goes to the model with a JSON schema that makes it write the
# call, `{"name": "get_weather", "arguments": {"city": ...}}`, and the answer comes back as that tool
# call, its logprobs untouched; a request after the tool result goes to the model as plain text turns.
# The proxy keeps each request it sent upstream; each is then sent again, raw, for the expected figures.
CALL_SCHEMA = {"type": "object", "required": ["name", "arguments"], "properties": {
    "name": {"type": "string", "enum": ["get_weather"]},
    "arguments": {"type": "object", "required": ["city"],
                  "properties": {"city": {"type": "string", "maxLength": 12}}}}}
AGENT_QUESTION = "What is the weather in Paris?"


def upstream_request(request: dict[str, Any]) -> dict[str, Any]:
    """What the tool-calling proxy sends the model for ``request`` (see above)."""
    messages = request["messages"]
    sent = {k: v for k, v in request.items() if k not in ("tools", "tool_choice", "parallel_tool_calls")}
    if not any(m["role"] == "tool" for m in messages):
        sent["response_format"] = {"type": "json_schema", "json_schema": {"name": "call", "schema": CALL_SCHEMA}}
        return sent
    plain = []
    for m in messages:
        if m["role"] == "tool":
            plain.append({"role": "user", "content": f"The tool answered: {m['content']}"})
        elif m.get("tool_calls"):
            plain.append({"role": "assistant", "content": json.dumps(m["tool_calls"][0]["function"])})
        else:
            plain.append({"role": m["role"], "content": m["content"]})
    sent["messages"] = plain
    return sent


@contextmanager
def tool_calling_proxy(upstream: str, sent: list[dict[str, Any]]) -> Iterator[str]:
    class Handler(QuietHandler):
        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            forward = upstream_request(request)
            sent.append(forward)
            data = httpx.post(f"{upstream}/chat/completions", json=forward, timeout=300).json()
            if "response_format" in forward and "response_format" not in request:
                choice = data["choices"][0]
                call = json.loads(choice["message"]["content"])
                choice["message"] = {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_0", "type": "function",
                     "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}]}
                choice["finish_reason"] = "tool_calls"
            out = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    with serving(Handler) as url:
        yield f"{url}/v1"


def test_create_agent_that_calls_a_tool(local_model: LocalModelServer, chat_model: Any) -> None:
    from langchain.agents import create_agent
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.tools import tool

    calls: list[str] = []

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        calls.append(city)
        return f"It is sunny and 21 degrees in {city}."

    sent: list[dict[str, Any]] = []
    h, records = handler()
    with tool_calling_proxy(local_model.base_url, sent) as url:
        llm = chat_model(max_tokens=80, logprobs=True, top_logprobs=TOP, base_url=url)
        agent = create_agent(llm, tools=[get_weather])
        out = agent.invoke({"messages": [HumanMessage(AGENT_QUESTION)]},
                           config={"callbacks": [h], "recursion_limit": 6})
    messages = out["messages"]
    assert calls and isinstance(messages[1], AIMessage) and messages[1].tool_calls, messages
    assert isinstance(messages[2], ToolMessage) and isinstance(messages[-1], AIMessage)
    # one record per model run, in order: the tool call, then the answer after the tool's result
    assert len(records) == len(sent) == 2 and h.open_runs == 0 and not h.errors
    for record, request in zip(records, sent, strict=True):
        raw = raw_chat_completion(local_model.base_url, request)["choices"][0]["logprobs"]["content"]
        assert_figures(record, raw)
    assert records[0].finish_reason == "tool_calls" and records[1].finish_reason in ("stop", "length")


# ---- a stream cut mid-way through a real HTTP connection -------------------------------------------
@contextmanager
def cutting_proxy(upstream: str, events: int, forwarded: list[dict[str, Any]]) -> Iterator[str]:
    """Forwards a streamed answer as HTTP/1.1 chunks: the first ``events`` SSE events (kept in
    ``forwarded``), then the head of a chunk that never arrives, and the connection closes. The
    client's HTTP parser then raises (an incomplete chunked body), as on a dropped connection."""

    class Handler(QuietHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            self.close_connection = True
            with httpx.Client(timeout=300) as client, client.stream(
                    "POST", f"{upstream}/chat/completions", json=request) as response:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for line in response.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    if len(forwarded) == events:
                        self.wfile.write(b"400\r\ndata: {\"choi")  # 1,024 bytes announced, 12 sent
                        self.wfile.flush()
                        return
                    forwarded.append(json.loads(line[6:]))
                    piece = line.encode() + b"\n\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()

    with serving(Handler) as url:
        yield f"{url}/v1"


@pytest.mark.parametrize("path", ["stream", "astream"])
def test_a_stream_cut_mid_way_counts_one_error_with_the_partial_report(path: str, local_model: LocalModelServer,
                                                                     chat_model: Any) -> None:
    from prometheus_client import CollectorRegistry

    from observability.exporters import PrometheusExporter

    registry = CollectorRegistry()
    records: list[ResponseRecord] = []
    h = ConfidenceCallbackHandler(exporters=[PrometheusExporter(registry=registry)], on_report=records.append)
    forwarded: list[dict[str, Any]] = []
    with cutting_proxy(local_model.base_url, 4, forwarded) as url:  # the role event and 3 tokens
        llm = llm_for(chat_model, base_url=url)
        with pytest.raises(Exception) as raised:  # which one: see the chain below
            STREAMED[path](llm, {"callbacks": [h]})
    chain: list[BaseException] = []
    error: BaseException | None = raised.value  # the SDK's connection error, caused by the HTTP parser's own
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert any("incomplete chunked read" in str(e) for e in chain), chain  # httpcore's RemoteProtocolError
    entries = [e for event in forwarded for choice in event.get("choices", [])
               for e in ((choice.get("logprobs") or {}).get("content") or [])]
    assert len(entries) == 3, len(entries)  # of the 7 the full answer has: cut mid-answer
    record = one(records, h)
    assert_figures(record, entries, status="error")
    assert registry.get_sample_value("llm_responses_total", {
        "status": "error", "logprobs": "present", "provider": "openai", "model": MODEL_NAME}) == 1
    assert sum(s.value for m in registry.collect() if m.name == "llm_responses" for s in m.samples
               if s.name == "llm_responses_total") == 1
