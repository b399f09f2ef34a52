"""The four workloads of issue 7, each timed once per call with ``time.perf_counter_ns``, plus
``w3c``: workload 3's response through the real ``ChatOpenAI`` client, for context.

A workload takes the model and the callbacks and returns a ``Sample``: the wall time of the
whole call and, for the sync stream, the time until the last chunk reached the caller (before
the run's end event fires), which separates per-chunk work from end-of-run work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.fake_model import FakeLogprobChatModel

PROMPT = "Which city is the capital of Australia?"


@dataclass(frozen=True)
class Sample:
    total_ns: int
    before_end_ns: int | None = None


@dataclass(frozen=True)
class Workload:
    """``run(callbacks)`` performs the workload once; ``units`` is what the µs figures divide by
    (tokens for streaming, responses for invoke); ``tokens`` is the length of one response."""

    key: str
    title: str
    unit: str
    units: int
    run: Callable[[list[Any]], Sample]
    tokens: int


def stream_sync(n_tokens: int) -> Workload:
    model = FakeLogprobChatModel(n_tokens=n_tokens)

    def run(callbacks: list[Any]) -> Sample:
        config = {"callbacks": callbacks}
        start = time.perf_counter_ns()
        last = start
        for _ in model.stream(PROMPT, config=config):  # type: ignore[arg-type]
            last = time.perf_counter_ns()
        end = time.perf_counter_ns()
        return Sample(end - start, last - start)

    return Workload("w1", f"1. `.stream`, {n_tokens:,} tokens", "token", n_tokens, run, n_tokens)


def stream_async(n_tokens: int) -> Workload:
    model = FakeLogprobChatModel(n_tokens=n_tokens)

    async def consume(callbacks: list[Any]) -> Sample:
        start = time.perf_counter_ns()
        last = start
        async for _ in model.astream(PROMPT, config={"callbacks": callbacks}):
            last = time.perf_counter_ns()
        end = time.perf_counter_ns()
        return Sample(end - start, last - start)

    def run(callbacks: list[Any]) -> Sample:
        return asyncio.run(consume(callbacks))

    return Workload("w2", f"2. `.astream`, {n_tokens:,} tokens", "token", n_tokens, run, n_tokens)


def invoke(n_tokens: int, calls: int = 1) -> Workload:
    """``calls`` invokes back to back per sample, so one sample is long enough to time well."""
    run = _invoking(FakeLogprobChatModel(n_tokens=n_tokens), calls)
    return Workload("w3", f"3. `invoke`, {n_tokens:,}-token response", "response", calls, run, n_tokens)


def _invoking(model: Any, calls: int) -> Callable[[list[Any]], Sample]:
    """A workload's ``run``: ``calls`` invokes of ``model`` back to back."""

    def run(callbacks: list[Any]) -> Sample:
        config = {"callbacks": callbacks}
        start = time.perf_counter_ns()
        for _ in range(calls):
            model.invoke(PROMPT, config=config)
        return Sample(time.perf_counter_ns() - start)

    return run


def invoke_chat_openai(n_tokens: int, calls: int = 1) -> Workload:
    """Workload 3's response, but produced the way a ChatOpenAI app gets it: the real
    ``ChatOpenAI`` and openai SDK parse an OpenAI chat completion JSON body carrying the same
    entries. The body comes from memory (``httpx.MockTransport``): no model, no network."""
    import json

    import httpx
    from langchain_openai import ChatOpenAI

    from benchmarks.fake_model import MODEL_NAME, TOP_LOGPROBS, FakeLogprobChatModel

    content = FakeLogprobChatModel(n_tokens=n_tokens)._content
    body = json.dumps({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": MODEL_NAME,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": {"content": content, "refusal": None},
                     "message": {"role": "assistant", "content": "".join(e["token"] for e in content)}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": n_tokens, "total_tokens": 12 + n_tokens},
    }).encode()

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    model = ChatOpenAI(model=MODEL_NAME, api_key="unused", base_url="http://127.0.0.1:9/v1", max_retries=0,  # type: ignore[arg-type]
                       logprobs=True, top_logprobs=TOP_LOGPROBS,
                       http_client=httpx.Client(transport=httpx.MockTransport(answer)))
    run = _invoking(model, calls)
    return Workload("w3c", f"3c. `invoke`, {n_tokens:,}-token response through the real `ChatOpenAI` (from memory)",
                    "response", calls, run, n_tokens)


def concurrent_astream(streams: int, n_tokens: int) -> Workload:
    model = FakeLogprobChatModel(n_tokens=n_tokens)

    async def one(callbacks: list[Any]) -> None:
        async for _ in model.astream(PROMPT, config={"callbacks": callbacks}):
            pass

    async def all_of_them(callbacks: list[Any]) -> Sample:
        start = time.perf_counter_ns()
        await asyncio.gather(*(one(callbacks) for _ in range(streams)))
        return Sample(time.perf_counter_ns() - start)

    def run(callbacks: list[Any]) -> Sample:
        return asyncio.run(all_of_them(callbacks))

    return Workload("w4", f"4. {streams} concurrent `.astream`, {n_tokens} tokens each", "token",
                    streams * n_tokens, run, n_tokens)


def standard(scale: float = 1.0) -> list[Workload]:
    """Issue 7's sizes; ``scale`` < 1 shrinks them (the smoke test uses a tiny one)."""
    def size(n: int) -> int:
        return max(2, int(n * scale))

    return [stream_sync(size(2000)), stream_async(size(2000)), invoke(size(1000), calls=max(1, int(10 * scale))),
            invoke_chat_openai(size(1000)), concurrent_astream(size(200), size(200))]
