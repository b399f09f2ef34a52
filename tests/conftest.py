"""Shared fixtures: the bundled real model behind llama.cpp's OpenAI-compatible server, and in-memory sinks.

A real part that cannot start fails the tests that need it, with the reason: nothing skips.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Iterator
from typing import Any, TypeVar

import httpx
import pytest

from observability.demo.model_server import MODEL_NAME, LocalModelServer
from observability.demo.process import ManagedProcess
from observability.langchain import peers
from observability.testing import InMemoryTelemetry

S = TypeVar("S", bound=ManagedProcess)

# Tests send Ctrl-C (SIGINT) to the demo and the model server they start. A process started in the
# background by a non-interactive shell (`make test &` in a script) has SIGINT ignored, and its
# children inherit that; restore Python's handler here, so that they start with the default action.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def start_or_fail(server: S, what: str) -> S:
    """Start a real part; if it cannot start, fail the test saying why (never skip)."""
    try:
        server.start()
    except Exception as exc:
        pytest.fail(f"{what} did not start: {exc}", pytrace=False)
    return server


def running(server: S, what: str) -> Iterator[S]:
    """For fixtures: ``yield from running(server, what)`` starts it and stops it by PID afterwards."""
    try:
        yield start_or_fail(server, what)
    finally:
        server.stop()


def model_threads() -> int:
    """CPU threads for the session's model server: the cores shared out among pytest-xdist workers
    (``make test`` runs two), so that two servers generating at once do not oversubscribe the CPU
    (llama.cpp's threads wait for each other at every step and slow down badly when they must take
    turns on a core)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 2) // workers)


@pytest.fixture
def telemetry() -> Iterator[InMemoryTelemetry]:
    """In-memory OTel and Prometheus sinks; afterwards shut down, and the peer-tracer ordering undone."""
    sinks = InMemoryTelemetry()
    yield sinks
    sinks.shutdown()
    peers.uninstall()


@pytest.fixture(scope="session")
def local_model() -> Iterator[LocalModelServer]:
    """One llama.cpp server with SmolLM2-135M on a free 127.0.0.1 port for the whole session (per
    pytest-xdist worker: it starts in about a second, so sharing one across workers is not worth a lock)."""
    yield from running(LocalModelServer(threads=model_threads(), parallel=8, ctx=16384), "the bundled model server")


@pytest.fixture
def chat_model(local_model: LocalModelServer) -> Any:
    """A factory for the real ``ChatOpenAI`` client pointed at the local model."""
    from langchain_openai import ChatOpenAI

    def make(**kwargs: Any) -> ChatOpenAI:
        options: dict[str, Any] = {
            "model": MODEL_NAME, "base_url": local_model.base_url, "api_key": "unused",
            "temperature": 0, "max_tokens": 24, "timeout": 120, "max_retries": 0,
            # langchain-openai otherwise shares one cached async client per base URL, whose pooled
            # connections belong to the event loop of the test that opened them ("Event loop is
            # closed" in the next test's asyncio.run).
            "http_async_client": httpx.AsyncClient(timeout=120),
        }
        options.update(kwargs)
        return ChatOpenAI(**options)

    return make


@pytest.fixture(scope="session")
def phoenix() -> Iterator[Any]:
    """One Phoenix server (OTLP/HTTP trace receiver with a span API) for the whole session."""
    from tests.backends import PhoenixServer

    yield from running(PhoenixServer(), "Phoenix")


@pytest.fixture
def prometheus() -> Iterator[Any]:
    """A factory: ``prometheus(targets)`` starts a real Prometheus scraping ``host:port`` targets
    every second (exemplar storage on); every server started is stopped after the test."""
    from tools.prometheus_server import PrometheusServer

    started: list[PrometheusServer] = []

    def start(targets: list[str], **kwargs: Any) -> PrometheusServer:
        server = PrometheusServer(targets, **kwargs)
        started.append(start_or_fail(server, "Prometheus"))
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def raw_chat_completion(base_url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to the server's /chat/completions without LangChain, for independent expected values."""
    request = urllib.request.Request(
        f"{base_url}/chat/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        result: dict[str, Any] = json.load(response)
    return result


def raw_chat_stream(base_url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The server-sent events of a streamed /chat/completions, parsed."""
    request = urllib.request.Request(
        f"{base_url}/chat/completions", data=json.dumps({**body, "stream": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    events = []
    with urllib.request.urlopen(request, timeout=120) as response:
        for line in response:
            line = line.strip()
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                events.append(json.loads(line[6:]))
    return events
