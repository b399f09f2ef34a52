"""Helpers for testing apps (and this package) that use the confidence handler.

- ``openai_logprobs``: an OpenAI-shaped logprobs payload for given tokens, alternatives included.
- ``FakeLogprobChatModel``: a LangChain chat model that answers at once, streamed or not, with
  OpenAI-shaped logprobs on every text chunk, exactly where ``ChatOpenAI`` puts them. It can fail
  after a given number of chunks, and wait between chunks so async streams interleave.
- ``RecordingExporter`` / ``RunTreeRecordingExporter``: exporters that keep what they are given
  in memory, so a test can assert on the records the handler produced.
- ``InMemoryTelemetry``: the standard exporters wired to private, in-memory sinks (a tracer
  provider keeping finished spans, a meter provider read on demand, a fresh Prometheus
  registry), to assert on exactly what would have been exported.

Nothing here talks to a network or a real provider.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from pydantic import Field

from observability.core.types import Exporter, ResponseRecord, RunStart

__all__ = [
    "FakeLogprobChatModel",
    "FakeModelError",
    "InMemoryTelemetry",
    "RecordingExporter",
    "RunTreeRecordingExporter",
    "openai_logprobs",
    "openai_token_entry",
]

DEFAULT_TOKENS = ("The", " capital", " of", " Australia", " is", " Canberra", ".")
DEFAULT_LOGPROBS = (-0.01, -0.2, -0.05, -0.9, -0.02, -1.6, -0.001)


def openai_token_entry(token: str, logprob: float, alternatives: int = 5) -> dict[str, Any]:
    """One entry of OpenAI's ``logprobs.content``: the token, its logprob, its UTF-8 bytes and
    ``alternatives`` top candidates, best first.

    The candidates are the token itself plus ``alternatives - 1`` made-up ones ``"{token}~{i}"``
    that share the probability the token leaves over: the i-th gets half of what is left, so the
    candidates' probabilities never sum past 1.
    """
    p = math.exp(logprob)
    rest = max(1.0 - p, 1e-12)
    candidates: list[tuple[str, float]] = [(token, logprob)]
    for i in range(1, alternatives):
        candidates.append((f"{token}~{i}", math.log(rest * 0.5**i)))
    candidates.sort(key=lambda pair: pair[1], reverse=True)
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode("utf-8")),
        "top_logprobs": [
            {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))} for text, lp in candidates
        ],
    }


def openai_logprobs(tokens: Sequence[str], logprobs: Sequence[float], alternatives: int = 5) -> dict[str, Any]:
    """The ``logprobs`` object of one OpenAI chat choice: ``{"content": [...], "refusal": None}``."""
    if len(tokens) != len(logprobs):
        raise ValueError(f"got {len(tokens)} tokens but {len(logprobs)} logprobs; give one logprob per token")
    return {
        "content": [openai_token_entry(t, lp, alternatives) for t, lp in zip(tokens, logprobs, strict=True)],
        "refusal": None,
    }


class FakeModelError(RuntimeError):
    """What ``FakeLogprobChatModel`` raises when told to fail (``error_after``)."""


class FakeLogprobChatModel(BaseChatModel):
    """A chat model that answers ``tokens`` with ``token_logprobs``, shaped like ``ChatOpenAI``.

    Non-streamed: one ``ChatGeneration`` whose ``generation_info`` holds ``logprobs`` (OpenAI's
    ``{"content": [...]}``) and ``finish_reason``. Streamed: one chunk per token, each carrying its
    own one-entry ``logprobs``, then an empty finish chunk with usage, as ``ChatOpenAI`` streams.
    Logprobs are sent only when ``logprobs`` is true (it can be bound per call:
    ``model.bind(logprobs=False)``).

    ``error_after=n`` raises ``FakeModelError`` after n chunks (0: before any). ``chunk_delay``
    seconds are awaited between async chunks (0 still yields to the event loop, so many streams
    interleave); sync streams sleep for it.
    """

    tokens: list[str] = Field(default_factory=lambda: list(DEFAULT_TOKENS))
    token_logprobs: list[float] = Field(default_factory=lambda: list(DEFAULT_LOGPROBS))
    alternatives: int = 5
    logprobs: bool = True
    model_name: str = "fake-logprobs"
    provider: str = "fake"
    error_after: int | None = None
    chunk_delay: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "fake-logprob-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "logprobs": self.logprobs,
                "top_logprobs": self.alternatives if self.logprobs else None}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = self.provider
        params["ls_model_name"] = self.model_name
        return params

    # ---- shared pieces ----------------------------------------------------------------------
    def _check(self) -> None:
        if len(self.tokens) != len(self.token_logprobs):
            raise ValueError(f"FakeLogprobChatModel got {len(self.tokens)} tokens but "
                             f"{len(self.token_logprobs)} token_logprobs; give one logprob per token")

    def _usage(self, prompt: Sequence[BaseMessage]) -> UsageMetadata:
        return {"input_tokens": len(prompt), "output_tokens": len(self.tokens),
                "total_tokens": len(prompt) + len(self.tokens)}

    def _wants_logprobs(self, kwargs: dict[str, Any]) -> bool:
        return bool(kwargs.get("logprobs", self.logprobs))

    def _result(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> ChatResult:
        self._check()
        if self.error_after is not None:
            raise FakeModelError(f"fake model told to fail (error_after={self.error_after})")
        info: dict[str, Any] = {"finish_reason": "stop", "model_name": self.model_name}
        if self._wants_logprobs(kwargs):
            info["logprobs"] = openai_logprobs(self.tokens, self.token_logprobs, self.alternatives)
        message = AIMessage(content="".join(self.tokens), usage_metadata=self._usage(messages))
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)],
                          llm_output={"model_name": self.model_name})

    def _chunks(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> Iterator[ChatGenerationChunk]:
        """The chunks of one streamed answer; raises ``FakeModelError`` at ``error_after``."""
        self._check()
        wants = self._wants_logprobs(kwargs)
        for index, (token, logprob) in enumerate(zip(self.tokens, self.token_logprobs, strict=True)):
            if self.error_after is not None and index >= self.error_after:
                raise FakeModelError(f"fake model told to fail after {self.error_after} chunks")
            info = ({"logprobs": {"content": [openai_token_entry(token, logprob, self.alternatives)],
                                  "refusal": None}} if wants else None)
            yield ChatGenerationChunk(message=AIMessageChunk(content=token), generation_info=info)
        if self.error_after is not None and self.error_after <= len(self.tokens):
            raise FakeModelError(f"fake model told to fail after {self.error_after} chunks")
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", usage_metadata=self._usage(messages)),
            generation_info={"finish_reason": "stop", "model_name": self.model_name},
        )

    # ---- LangChain's entry points -----------------------------------------------------------
    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return self._result(messages, kwargs)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        await asyncio.sleep(self.chunk_delay)
        return self._result(messages, kwargs)

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages, kwargs):
            if self.chunk_delay:
                time.sleep(self.chunk_delay)
            if run_manager is not None:
                logprobs = (chunk.generation_info or {}).get("logprobs")
                run_manager.on_llm_new_token(chunk.text, chunk=chunk, logprobs=logprobs)
            yield chunk

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages, kwargs):
            await asyncio.sleep(self.chunk_delay)
            if run_manager is not None:
                logprobs = (chunk.generation_info or {}).get("logprobs")
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk, logprobs=logprobs)
            yield chunk


class RecordingExporter:
    """An exporter that keeps every record it is given (thread-safe), for assertions.

    ``records`` holds them in arrival order; ``batches`` counts ``export`` calls (one per model run).
    """

    def __init__(self) -> None:
        self.records: list[ResponseRecord] = []
        self.batches = 0
        self._lock = threading.Lock()

    def export(self, records: Sequence[ResponseRecord]) -> None:
        with self._lock:
            self.records.extend(records)
            self.batches += 1


class RunTreeRecordingExporter(RecordingExporter):
    """A ``RecordingExporter`` that also sees every run start and every run end without a record
    (non-model runs, and model runs dropped or evicted). Having these hooks makes the handler
    forward chain, tool and retriever events too.
    """

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[RunStart] = []
        self.ends: list[tuple[UUID, int, BaseException | None]] = []

    def on_run_start(self, start: RunStart) -> None:
        with self._lock:
            self.starts.append(start)

    def on_run_end(self, run_id: UUID, ended_at_ns: int, error: BaseException | None) -> None:
        with self._lock:
            self.ends.append((run_id, ended_at_ns, error))


class InMemoryTelemetry:
    """Private in-memory sinks for the standard exporters, nothing global touched.

    ``exporters(**options)`` returns ``default_exporters`` bound to them (options as there, e.g.
    ``capture_content=True``, ``metadata_labels=["route"]``). Then ``spans()`` are the finished
    spans, ``metrics()`` the OpenTelemetry metrics collected now, ``prometheus_text()`` the
    registry's exposition (OpenMetrics, with exemplars, by default) and ``sample(name, **labels)``
    one Prometheus sample's value. Call ``shutdown()`` when done.
    """

    def __init__(self) -> None:
        self.span_exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.span_exporter))
        self.metric_reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metric_reader], shutdown_on_exit=False)
        self.registry = CollectorRegistry()

    def exporters(self, **options: Any) -> list[Exporter]:
        from observability.exporters import default_exporters

        return default_exporters(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider,
                                 registry=self.registry, **options)

    def spans(self) -> tuple[ReadableSpan, ...]:
        return tuple(self.span_exporter.get_finished_spans())

    def metrics(self) -> MetricsData | None:
        return self.metric_reader.get_metrics_data()

    def prometheus_text(self, openmetrics: bool = True) -> str:
        if openmetrics:
            raw: bytes = generate_openmetrics(self.registry)  # type: ignore[no-untyped-call]
        else:
            raw = generate_latest(self.registry)
        return raw.decode("utf-8")

    def sample(self, name: str, **labels: str) -> float | None:
        """The value of the Prometheus sample ``name`` whose labels include ``labels``, summed over
        the others (e.g. ``sample("llm_responses_total", status="ok")``); None when there is none."""
        total: float | None = None
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total = (total or 0.0) + sample.value
        return total

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
