"""Issue 8.3: load and lifecycle. 1,000 concurrent async streams with random cancellations and
errors add up exactly; nothing per-run is left behind; runs whose end never arrives are evicted at
the bound and counted, and memory stays flat while they pile up.
"""

from __future__ import annotations

import asyncio
import gc
import math
import random
import tracemalloc
from collections import Counter
from collections.abc import Generator
from typing import Any, cast
from uuid import uuid4

from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.runnables import RunnableLambda
from opentelemetry.trace import SpanKind, StatusCode

from observability import ConfidenceCallbackHandler
from observability.testing import (
    FakeLogprobChatModel,
    FakeModelError,
    InMemoryTelemetry,
    RunTreeRecordingExporter,
    openai_logprobs,
)

STREAMS = 1_000
TOKENS = [f" w{i}" for i in range(20)]
LOGPROBS = [-0.05 * (i % 7) - 0.01 for i in range(20)]


def plan_streams(seed: int) -> list[tuple[str, int]]:
    """(how the stream ends, at which chunk): ok, error (model raises), cancel (task cancelled),
    close (consumer breaks out and closes the stream), invoke / invoke_error (not streamed)."""
    rng = random.Random(seed)
    kinds = ["ok", "error", "cancel", "close", "invoke", "invoke_error"]
    return [(rng.choice(kinds), rng.randint(1, len(TOKENS) - 1)) for _ in range(STREAMS)]


EXPECTED_STATUS = {"ok": "ok", "invoke": "ok", "error": "error", "invoke_error": "error",
                   "cancel": "cancelled", "close": "cancelled"}


async def consume(chain: Any, handler: ConfidenceCallbackHandler, kind: str, at: int) -> None:
    config = {"callbacks": [handler]}
    if kind in ("invoke", "invoke_error"):
        await chain.ainvoke("hi", config=config)
        return
    stream = chain.astream("hi", config=config)
    received = 0
    try:
        async for _ in stream:
            received += 1
            if received == at and kind == "cancel":
                task = asyncio.current_task()
                assert task is not None
                task.cancel()  # lands at the stream's next await, inside the model call
            if received == at and kind == "close":
                break
    finally:
        await stream.aclose()


def test_1000_concurrent_streams_with_cancellations_and_errors_add_up() -> None:
    seed = random.randrange(2**32)
    plans = plan_streams(seed)
    sinks = InMemoryTelemetry()
    tree = RunTreeRecordingExporter()
    exporters = [*sinks.exporters(trace_run_tree=True), tree]
    tracing = exporters[0]
    handler = ConfidenceCallbackHandler(exporters=exporters)

    def chain_for(kind: str, at: int) -> Any:
        fails = kind in ("error", "invoke_error")
        model = FakeLogprobChatModel(tokens=TOKENS, token_logprobs=LOGPROBS,
                                     error_after=(0 if kind == "invoke_error" else at) if fails else None)
        return RunnableLambda(lambda text: text, name="prepare") | model

    async def main() -> list[Any]:
        tasks = [asyncio.create_task(consume(chain_for(kind, at), handler, kind, at)) for kind, at in plans]
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        outcomes = asyncio.run(main())
        expected = Counter(EXPECTED_STATUS[kind] for kind, _ in plans)
        # Each task ended the way it was told to (so the expected tally is the real one).
        for (kind, _), outcome in zip(plans, outcomes, strict=True):
            want = {"ok": type(None), "invoke": type(None), "error": FakeModelError, "invoke_error": FakeModelError,
                    "cancel": asyncio.CancelledError, "close": type(None)}[kind]
            assert isinstance(outcome, want), (seed, kind, outcome)

        assert dict(handler.errors) == {}, seed
        assert handler.open_runs == 0 and handler.evicted_runs == 0
        model_starts = [s for s in tree.starts if s.kind == "chat"]
        assert len(model_starts) == STREAMS
        statuses = Counter(record.status for record in tree.records)
        assert statuses == expected, (seed, statuses, expected)
        # Prometheus: responses by status = runs started, per status and in total.
        for status, count in expected.items():
            assert sinks.sample("llm_responses_total", status=status) == count, (seed, status)
        assert sinks.sample("llm_responses_total") == STREAMS
        # Spans: one per model run, ERROR for exactly the failed ones; every chain span ended.
        spans = sinks.spans()
        model_spans = [s for s in spans if s.kind is SpanKind.CLIENT]
        assert len(model_spans) == STREAMS
        assert sum(s.status.status_code is StatusCode.ERROR for s in model_spans) == expected["error"]
        chain_starts = [s for s in tree.starts if s.kind == "chain"]
        assert len([s for s in spans if s.kind is SpanKind.INTERNAL]) == len(chain_starts)
        assert all(s.end_time is not None for s in spans)
        assert tracing.open_runs == 0  # type: ignore[attr-defined]
        # Complete answers are scored in full, independently of how many ran beside them.
        want_probability = math.exp(sum(LOGPROBS) / len(LOGPROBS))
        for record in tree.records:
            if record.status == "ok":
                assert record.report is not None and record.report.token_count == len(TOKENS)
                assert record.report.sequence_probability is not None
                assert math.isclose(record.report.sequence_probability, want_probability, rel_tol=1e-12)
            elif record.report is None:  # failed before the first chunk: asked for logprobs, got none
                assert record.status == "error" and record.logprobs == "not_returned"
            else:  # the partial answer of a broken-off stream
                assert 0 < record.report.token_count < len(TOKENS)
    finally:
        sinks.shutdown()


def test_runs_whose_end_never_arrives_are_evicted_at_the_bound_and_counted() -> None:
    sinks = InMemoryTelemetry()
    tree = RunTreeRecordingExporter()
    exporters = [*sinks.exporters(), tree]
    handler = ConfidenceCallbackHandler(exporters=exporters, max_open_runs=100)
    model = FakeLogprobChatModel()
    # Streams the app started and abandoned: first chunk read, generator kept alive, never closed.
    # (BaseChatModel.stream is a generator function, typed as returning a plain Iterator)
    abandoned = [cast(Generator[AIMessageChunk, None, None], model.stream("hi", config={"callbacks": [handler]}))
                 for _ in range(250)]
    for stream in abandoned:
        next(stream)
    assert handler.open_runs == 100
    assert handler.evicted_runs == 150
    started = [s.run_id for s in tree.starts]
    assert [run_id for run_id, _, error in tree.ends] == started[:150]  # the oldest go first
    assert exporters[0].open_runs == 100  # type: ignore[attr-defined]  # the tracer let go too
    # Closing them now: the 100 still tracked end as cancelled; the evicted ones are gone for good.
    for stream in abandoned:
        stream.close()
    assert handler.open_runs == 0 and dict(handler.errors) == {}
    assert Counter(r.status for r in tree.records) == {"cancelled": 100}
    assert exporters[0].open_runs == 0  # type: ignore[attr-defined]
    assert sinks.sample("llm_responses_total") == 100
    sinks.shutdown()


def test_memory_stays_flat_while_unfinished_runs_pile_up() -> None:
    sinks = InMemoryTelemetry()
    handler = ConfidenceCallbackHandler(exporters=sinks.exporters(), max_open_runs=1_000)
    chunk = ChatGenerationChunk(message=AIMessageChunk(content=" w"),
                                generation_info={"logprobs": openai_logprobs([" w"], [-0.1])})

    def start_and_forget(count: int) -> None:  # a start and three chunks, never an end
        for _ in range(count):
            run_id = uuid4()
            handler.on_chat_model_start({}, [["hi"]], run_id=run_id, metadata={"ls_provider": "fake"},
                                        invocation_params={"logprobs": True})
            for _ in range(3):
                handler.on_llm_new_token(" w", chunk=chunk, run_id=run_id)

    tracemalloc.start()
    try:
        start_and_forget(2_000)  # the state is full from 1,000 on
        gc.collect()
        warm = tracemalloc.get_traced_memory()[0]
        start_and_forget(10_000)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        sinks.shutdown()
    assert handler.open_runs == 1_000
    assert handler.evicted_runs == 11_000
    assert dict(handler.errors) == {}
    print(f"traced memory with 2,000 runs never ended: {warm / 1e6:.2f} MB; with 12,000: {after / 1e6:.2f} MB")
    assert after < 1.5 * warm, (warm, after)  # six times the runs; kept per run, it would be ~6x
