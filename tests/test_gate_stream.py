"""What a consumer streams from a gate never holds the rejected answer, and holds the chosen one.

The primary says "Sydney." with p = 0.3 per token, the fallback "Canberra." with p = 0.99: a gate at
0.6 rejects the primary, a gate at 0.01 keeps it. Every path a chat UI streams through is read with
the real LangChain and LangGraph: the gate's own ``stream``/``astream``, ``astream_events`` v1 and v2
(on the gate and on a graph), LangGraph ``stream_mode="messages"`` and ``"updates"`` (sync and
async) and LangGraph's v3 protocol events.
"""

from __future__ import annotations

import asyncio
import math
import warnings
from collections.abc import Callable
from typing import Annotated, Any, TypedDict, cast

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from prometheus_client import CollectorRegistry

from observability.langchain.gate import ConfidenceGate, confidence_fallback
from observability.langchain.gate_hold import PRIMARY_TAG
from observability.testing import FakeLogprobChatModel

REJECTED, CHOSEN = ["Syd", "ney", "."], ["Can", "berra", "."]
QUESTION = [("user", "What is the capital of Australia?")]


def models() -> tuple[FakeLogprobChatModel, FakeLogprobChatModel]:
    small = FakeLogprobChatModel(tokens=REJECTED, token_logprobs=[math.log(0.3)] * 3)
    big = FakeLogprobChatModel(tokens=CHOSEN, token_logprobs=[math.log(0.99)] * 3)
    return small, big


def gate(threshold: float) -> ConfidenceGate:
    small, big = models()
    return confidence_fallback(small, big, threshold=threshold, registry=CollectorRegistry())


class State(TypedDict):
    messages: Annotated[list[BaseMessage], add_messages]


def graph(threshold: float, asynchronous: bool = False) -> Any:
    chosen = gate(threshold)
    builder = StateGraph(State)
    if asynchronous:
        async def answer(state: State) -> dict[str, Any]:
            return {"messages": [await chosen.ainvoke(state["messages"])]}
        builder.add_node("answer", answer)
    else:
        builder.add_node("answer", lambda state: {"messages": [chosen.invoke(state["messages"])]})
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    return builder.compile()


def text(chunks: list[Any]) -> str:
    return "".join(c if isinstance(c, str) else c.text if isinstance(c, BaseMessage) else "" for c in chunks)


def messages_mode(threshold: float) -> str:
    return text([m for m, _ in graph(threshold).stream({"messages": QUESTION}, stream_mode="messages")])


def async_messages_mode(threshold: float) -> str:
    async def read() -> list[Any]:
        return [m async for m, _ in graph(threshold, True).astream({"messages": QUESTION}, stream_mode="messages")]
    return text(asyncio.run(read()))


def updates_mode(threshold: float) -> str:
    updates = list(graph(threshold).stream({"messages": QUESTION}, stream_mode="updates"))
    return text([m for update in updates for m in update["answer"]["messages"]])


def gate_stream(threshold: float) -> str:
    return text(list(gate(threshold).stream(QUESTION)))


def gate_astream(threshold: float) -> str:
    async def read() -> list[Any]:
        return [c async for c in gate(threshold).astream(QUESTION)]
    return text(asyncio.run(read()))


def events(runnable: Any, payload: Any, version: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # v1 is deprecated, and still what some UIs use
            return [e async for e in runnable.astream_events(payload, version=version)]
    return asyncio.run(read())


def model_tokens(found: list[dict[str, Any]]) -> str:
    return text([e["data"]["chunk"] for e in found if e["event"] == "on_chat_model_stream"])


def everything_in(found: list[dict[str, Any]]) -> str:
    """Every event's data as text: a rejected token anywhere (ends, chain streams) shows up here."""
    return " ".join(repr(e["data"]) for e in found)


def gate_events(version: str) -> Callable[[float], tuple[str, str]]:
    def read(threshold: float) -> tuple[str, str]:
        found = events(gate(threshold), QUESTION, version)
        return model_tokens(found), everything_in(found)
    return read


def graph_events(threshold: float) -> tuple[str, str]:
    found = events(graph(threshold), {"messages": QUESTION}, "v2")
    return model_tokens(found), everything_in(found)


def v3_protocol(threshold: float) -> tuple[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LangGraph marks the v3 protocol experimental
        found = list(graph(threshold).stream_events({"messages": QUESTION}, version="v3"))
    deltas = [e["params"]["data"][0]["delta"]["text"] for e in found if e["method"] == "messages"
              and e["params"]["data"][0].get("event") == "content-block-delta"]
    return "".join(deltas), repr(found)


@pytest.mark.parametrize("read", [messages_mode, async_messages_mode, updates_mode, gate_stream, gate_astream],
                         ids=["langgraph-messages", "langgraph-messages-async", "langgraph-updates", "stream",
                              "astream"])
def test_a_stream_shows_only_the_chosen_answer(read: Callable[[float], str]) -> None:
    assert read(0.6) == "Canberra."  # rejected: not one token of "Sydney." before the fallback
    assert read(0.01) == "Sydney."  # kept: the primary's answer, once the decision is made


@pytest.mark.parametrize("read", [gate_events("v1"), gate_events("v2"), graph_events, v3_protocol],
                         ids=["astream_events-v1", "astream_events-v2", "graph-astream_events", "v3-protocol"])
def test_streamed_events_never_hold_the_rejected_answer(read: Callable[[float], tuple[str, str]]) -> None:
    tokens, everything = read(0.6)
    assert tokens == "Canberra."
    assert "Syd" not in everything and "ney" not in everything
    tokens, everything = read(0.01)
    assert tokens == "Sydney."  # the kept primary's tokens, one event each, after the decision
    assert "Can" not in everything


def test_kept_tokens_arrive_as_chunks_after_the_decision() -> None:
    """LangGraph "messages" shows the kept primary token by token, as it would without the gate."""
    chunks = [m.text for m, _ in graph(0.01).stream({"messages": QUESTION}, stream_mode="messages")]
    assert [c for c in chunks if c] == REJECTED


class TokenPrinter(BaseCallbackHandler):
    """An app's own handler that shows tokens as they come (not one of LangChain's streaming
    handlers): the gate cannot hold it back, so it skips runs tagged PRIMARY_TAG, as the docs say."""

    def __init__(self) -> None:
        self.shown: list[str] = []
        self.primary: list[str] = []

    def on_llm_new_token(self, token: Any, *, tags: list[str] | None = None, **kwargs: Any) -> None:
        (self.primary if PRIMARY_TAG in (tags or []) else self.shown).append(token)


def test_an_apps_own_token_handler_tells_the_primary_by_its_tag() -> None:
    printer = TokenPrinter()  # stream=True (passed on to both models) makes them stream to callbacks
    output = gate(0.6).invoke(QUESTION, {"callbacks": [printer]}, stream=True)
    assert isinstance(output, AIMessage) and output.text == "Canberra."
    assert "".join(printer.primary) == "Sydney."
    assert "".join(printer.shown) == "Canberra."


def test_the_abstain_recipe_never_streams_the_doubtful_answer() -> None:
    """docs/act-on-confidence.md's "abstain" recipe, streamed as a chat UI does."""
    from langchain_core.runnables import RunnableLambda

    small, _ = models()
    abstain = RunnableLambda[Any, AIMessage](lambda _: AIMessage("I am not sure; please check with a person."))
    careful = confidence_fallback(small, abstain, threshold=0.5, metric="min_token_probability", name="abstain",
                                  registry=CollectorRegistry())
    builder = StateGraph(State)
    builder.add_node("answer", lambda state: {"messages": [careful.invoke(state["messages"])]})
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    shown = text([m for m, _ in builder.compile().stream(cast(State, {"messages": QUESTION}), stream_mode="messages")])
    assert shown == "I am not sure; please check with a person."


def test_a_langchain_core_without_the_private_streaming_classes_still_imports_and_gates() -> None:
    """The hold relies on langchain-core's private streaming handler classes; where they are gone the
    package still imports, says so once, and the gate still decides (it just cannot hold back)."""
    import subprocess
    import sys

    script = (
        "import logging; logging.basicConfig()\n"
        "import langchain_core.language_models.chat_models  # langchain-core's own references, taken first\n"
        "import langchain_core.tracers._streaming as streaming\n"
        "del streaming._StreamingCallbackHandler, streaming._V2StreamingCallbackHandler  # as if renamed\n"
        "from prometheus_client import CollectorRegistry\n"
        "from langchain_core.runnables import RunnableLambda\n"
        "from observability import confidence_fallback\n"
        "from observability.testing import FakeLogprobChatModel\n"
        "primary = FakeLogprobChatModel(token_logprobs=[-5.0] * 4, tokens=['a'] * 4)\n"
        "gate = confidence_fallback(primary, RunnableLambda(lambda _: 'fallback'), threshold=0.5,\n"
        "                           registry=CollectorRegistry())\n"
        "print(gate.invoke('q'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "fallback"
    assert done.stderr.count("cannot hold a rejected answer back") == 1
