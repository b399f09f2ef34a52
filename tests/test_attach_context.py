"""``observe_confidence()``: every run in the block is observed, once; nothing after it.

The real ChatOpenAI client talks to the real local model. Which model runs happened is taken
from LangChain's own run collector (``collect_runs()``), not from our handler.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, TypedDict

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tracers.context import collect_runs

from observability import ConfidenceCallbackHandler, ResponseRecord, observe_confidence
from tests.attach_support import Recorder, llm_run_ids

pytestmark = pytest.mark.real_model

MAX_TOKENS = 8


@pytest.fixture
def model(chat_model: Any) -> Any:
    return chat_model(max_tokens=MAX_TOKENS).bind(logprobs=True, top_logprobs=2)


def chain_of(model: Any) -> Any:
    prompt = ChatPromptTemplate.from_messages([("system", "Answer in a few words."), ("human", "{q}")])
    return prompt | model | StrOutputParser()


def test_sync_invoke_stream_and_batch_inside_the_block_are_observed_and_nothing_after(model: Any) -> None:
    recorder = Recorder()
    chain = chain_of(model)
    with collect_runs() as collected, observe_confidence(exporters=[recorder]) as handler:
        answer = chain.invoke({"q": "Capital of France?"})
        streamed = "".join(chunk.text for chunk in model.stream("Name a colour."))
        batch = chain.batch([{"q": "2 + 2?"}, {"q": "Largest ocean?"}])
    expected = llm_run_ids(collected.traced_runs)
    assert isinstance(handler, ConfidenceCallbackHandler)
    assert len(expected) == 4
    assert sorted(map(str, recorder.run_ids)) == sorted(map(str, expected))
    texts = {r.text for r in recorder.records}
    assert {answer, streamed, *batch} <= texts
    assert all(r.logprobs == "present" and r.status == "ok" for r in recorder.records)
    assert handler.open_runs == 0

    chain.invoke({"q": "Capital of Italy?"})
    assert len(recorder.records) == 4  # after the block: not observed


def test_async_calls_and_tasks_inside_the_block_are_observed(model: Any) -> None:
    recorder = Recorder()
    chain = chain_of(model)

    async def consume_stream() -> str:
        return "".join([chunk.text async for chunk in model.astream("Name a fruit.")])

    async def main() -> tuple[Any, ...]:
        with observe_confidence(exporters=[recorder]):
            inside = await asyncio.gather(chain.ainvoke({"q": "Capital of Spain?"}),
                                          asyncio.create_task(consume_stream()))
        await chain.ainvoke({"q": "Capital of Peru?"})  # after the block
        return tuple(inside)

    with collect_runs() as collected:
        answers = asyncio.run(main())
    all_runs = llm_run_ids(collected.traced_runs)
    assert len(all_runs) == 3
    assert len(recorder.records) == 2
    assert set(recorder.run_ids) < all_runs
    assert set(answers) <= {r.text for r in recorder.records}


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
def test_a_langgraph_graph_and_a_prebuilt_agent_are_observed(model: Any, chat_model: Any) -> None:
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool
    from langgraph.graph import END, START, StateGraph
    from langgraph.prebuilt import create_react_agent

    class State(TypedDict):
        question: str
        answer: str

    def ask(state: State) -> dict[str, str]:
        return {"answer": chain_of(model).invoke({"q": state["question"]})}

    def check(state: State) -> dict[str, str]:
        return {"answer": chain_of(model).invoke({"q": f"Is this right: {state['answer']}?"})}

    builder = StateGraph(State)
    builder.add_node("ask", ask)
    builder.add_node("check", check)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", "check")
    builder.add_edge("check", END)
    graph = builder.compile()

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    agent = create_react_agent(chat_model(max_tokens=MAX_TOKENS), [add])

    recorder = Recorder()
    with collect_runs() as collected, observe_confidence(exporters=[recorder], enable_logprobs=True):
        graph.invoke({"question": "Capital of France?", "answer": ""})
        agent.invoke({"messages": [HumanMessage("What is 2 plus 3? Use the add tool.")]})
    expected = llm_run_ids(collected.traced_runs)
    assert len(expected) >= 3  # two graph nodes, at least one agent step
    assert sorted(map(str, recorder.run_ids)) == sorted(map(str, expected))
    # the agent's model was not asked for logprobs by the app: enable_logprobs asked for them
    assert all(r.logprobs == "present" for r in recorder.records)


def test_a_bare_thread_does_not_inherit_the_block(model: Any) -> None:
    """Documented limit: a plain threading.Thread starts with an empty context."""
    recorder = Recorder()
    with observe_confidence(exporters=[recorder]):
        thread = threading.Thread(target=lambda: model.invoke("Say hi."))
        thread.start()
        thread.join(timeout=300)
    assert not thread.is_alive()
    assert recorder.records == []


def test_nested_blocks_the_innermost_handler_observes(model: Any) -> None:
    outer, inner = Recorder(), Recorder()
    with observe_confidence(exporters=[outer]):
        with observe_confidence(exporters=[inner]):
            model.invoke("Say one.")
        model.invoke("Say two.")
    assert len(inner.records) == 1
    assert len(outer.records) == 1
    assert inner.run_ids != outer.run_ids


def test_attached_twice_sharing_an_exporter_each_run_is_exported_once(model: Any) -> None:
    recorder = Recorder()
    explicit_reports: list[ResponseRecord] = []
    hooked_reports: list[ResponseRecord] = []
    explicit = ConfidenceCallbackHandler(exporters=[recorder], on_report=explicit_reports.append)
    chain = chain_of(model)
    with collect_runs() as collected, \
            observe_confidence(exporters=[recorder], on_report=hooked_reports.append) as hooked:
        chain.invoke({"q": "Capital of France?"}, config={"callbacks": [explicit]})
        chain.invoke({"q": "Capital of Chile?"})
    expected = llm_run_ids(collected.traced_runs)
    assert len(expected) == 2
    assert sorted(map(str, recorder.run_ids)) == sorted(map(str, expected))  # each exported once
    # LangChain does not promise which handler it calls first; exactly one leaves the run
    assert explicit.duplicate_runs + hooked.duplicate_runs == 1
    # each handler still reports every run it saw
    assert len(explicit_reports) == 1 and len(hooked_reports) == 2
    assert explicit_reports[0].run_id in {r.run_id for r in hooked_reports}
    assert explicit.open_runs == hooked.open_runs == 0


def test_handlers_sharing_no_exporter_each_report(model: Any) -> None:
    """The dedupe rule is about shared exporters: on_report-only handlers all see the run."""
    mine: list[ResponseRecord] = []
    theirs: list[ResponseRecord] = []
    explicit = ConfidenceCallbackHandler(exporters=(), on_report=mine.append)
    with observe_confidence(exporters=(), on_report=theirs.append):
        model.invoke("Say yes.", config={"callbacks": [explicit]})
    assert len(mine) == len(theirs) == 1
    assert mine[0].run_id == theirs[0].run_id


def test_bad_options_raise_clear_errors() -> None:
    with pytest.raises(TypeError, match="enable_logprobs"), observe_confidence(enable_logprobs="yes"):  # type: ignore[arg-type]
        pass
    with pytest.raises(ValueError, match="top_logprobs"), observe_confidence(enable_logprobs=True, top_logprobs=99):
        pass
    with pytest.raises(ValueError, match="low_confidence_threshold"), observe_confidence(low_confidence_threshold=2):
        pass
