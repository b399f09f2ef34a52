"""Act on confidence: a Runnable that keeps a confident answer and falls back on a doubtful one.

``confidence_fallback(primary, fallback, threshold=...)`` runs ``primary``, reads the confidence
report of the model run inside it (the last one to end, choice 0: for a chain or an agent, the
final answer) and returns ``primary``'s output when the figure is at least ``threshold``;
otherwise it runs ``fallback`` on the same input and returns that. Errors are never a reason to
fall back: an error of either branch reaches the caller as it is (``with_fallbacks`` is
LangChain's tool for errors, and the two compose). What a consumer streams from a gate never holds
the rejected answer (``gate_hold``).

Every decision is counted (Prometheus ``{prefix}_confidence_gate_decisions_total`` and OTel
``{prefix}.confidence.gate.decisions``, by gate name and outcome) and traced (an INTERNAL span
``confidence_gate {name}`` with the outcome and the figure, a child of the caller's current span).
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import patch_config
from opentelemetry import metrics, trace
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from observability.core.types import ConfidenceReport, ResponseRecord
from observability.exporters._definitions import (
    DEFAULT_PREFIX,
    INSTRUMENTATION_SCOPE,
    check_prefix,
    package_version,
)
from observability.exporters._labels import MetricLabels
from observability.langchain.gate_hold import hold_streaming_consumers
from observability.langchain.handler import ConfidenceCallbackHandler

logger = logging.getLogger("observability")

Outcome = Literal["kept", "fell_back", "missing"]
OnMissing = Literal["keep", "fallback", "raise"]
Metric = str | Callable[[ConfidenceReport], bool]
METRICS = ("sequence_probability", "min_token_probability", "mean_top_margin", "mean_token_negentropy",
           "top_k_mass")
"""Report figures where higher means more confident. A string starting with ``/`` names a field of
a JSON answer (a JSON Pointer, see ``ConfidenceReport.fields``): its least likely token's probability."""
ATTRIBUTE_PREFIX = "llm.confidence.gate"


class ConfidenceMissing(RuntimeError):
    """``on_missing="raise"``: the primary's model returned no logprobs (or no model ran)."""


def confidence_fallback(primary: Runnable[Any, Any], fallback: Runnable[Any, Any], *, threshold: float,
                        metric: Metric = "sequence_probability", on_missing: OnMissing = "keep",
                        name: str = "confidence_fallback", registry: CollectorRegistry | None = None,
                        meter_provider: metrics.MeterProvider | None = None,
                        tracer_provider: trace.TracerProvider | None = None,
                        prefix: str = DEFAULT_PREFIX) -> ConfidenceGate:
    """A Runnable: ``primary``'s output when its confidence is at least ``threshold``, else
    ``fallback``'s output for the same input.

    Args:
        primary / fallback: any Runnables (a model, a chain containing one, an agent); config and
            callbacks reach both.
        threshold: the figure's lowest value that keeps the primary's answer (``>=`` keeps).
        metric: a report figure where higher means more confident (see ``METRICS``), a field's
            JSON Pointer (``"/age"``: that field's least likely token's probability), or a callable
            ``(ConfidenceReport) -> bool`` (True keeps; ``threshold`` is then only recorded).
        on_missing: when no logprobs came back (or the field is absent): ``"keep"`` the primary's
            answer, run the ``"fallback"``, or ``"raise"`` ``ConfidenceMissing``.
        name: the gate's name in metrics and spans (keep it low-cardinality).
        registry / meter_provider / tracer_provider / prefix: where decisions are counted and
            traced (default: the process-wide ones).

    ``invoke``, ``ainvoke``, ``batch``, ``abatch``, ``stream`` and ``astream`` decide per input and pass
    keyword arguments (``stop=[...]``) on to both branches, as ``with_fallbacks`` does. Nothing a
    consumer streams from a gate holds a rejected answer: the primary's run reaches streaming
    handlers (``astream_events``, LangGraph ``"messages"``) only once its answer is kept (see
    ``gate_hold``); ``stream`` yields a kept answer once, after the decision, and a fallback's
    chunks as they come.
    """
    if not isinstance(primary, Runnable) or not isinstance(fallback, Runnable):
        raise TypeError("primary and fallback must be LangChain Runnables (a model, a chain, an agent)")
    if not callable(metric) and not (isinstance(metric, str) and (metric in METRICS or metric.startswith("/"))):
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, a field's JSON Pointer such as '/age', "
                         f"or a callable (ConfidenceReport) -> bool; got {metric!r}")
    _check_threshold(threshold, metric)
    if on_missing not in ("keep", "fallback", "raise"):
        raise ValueError(f"on_missing must be 'keep', 'fallback' or 'raise', got {on_missing!r}")
    return ConfidenceGate(primary, fallback, float(threshold), metric, on_missing, name,
                          _Decisions(name, check_prefix(prefix), registry, meter_provider, tracer_provider))


def _check_threshold(threshold: object, metric: Metric) -> None:
    """Every named figure and field figure is a probability-like number in [0, 1]; a callable's
    threshold is only recorded, but must still be a finite number (it goes on the span)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold must be a number, got {threshold!r}")
    if callable(metric):
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number (with a callable metric it is only recorded), "
                             f"got {threshold!r}")
    elif not 0.0 <= threshold <= 1.0:  # also refuses NaN, which compares false
        raise ValueError(f"threshold for {metric!r} must be between 0 and 1 (a probability-like figure; "
                         f"0.6, not 60), got {threshold!r}")


class ConfidenceGate(Runnable[Any, Any]):
    """See ``confidence_fallback``."""

    def __init__(self, primary: Runnable[Any, Any], fallback: Runnable[Any, Any], threshold: float,
                 metric: Metric, on_missing: OnMissing, name: str, decisions: _Decisions) -> None:
        self.primary = primary
        self.fallback = fallback
        self.threshold = threshold
        self.metric = metric
        self.on_missing = on_missing
        self.name = name
        self._decisions = decisions

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._call_with_config(self._invoke, input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        yield from self._transform_stream_with_config(iter([input]), self._stream, config, **kwargs)

    async def astream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        async for chunk in self._atransform_stream_with_config(_one(input), self._astream, config, **kwargs):
            yield chunk

    def _invoke(self, input: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig,
                **kwargs: Any) -> Any:
        output, use_fallback, span = self._primary(input, run_manager, config, kwargs)
        with span:
            if use_fallback:
                return self.fallback.invoke(input, self._child(config, run_manager), **kwargs)
            return output

    async def _ainvoke(self, input: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig,
                       **kwargs: Any) -> Any:
        output, use_fallback, span = await self._aprimary(input, run_manager, config, kwargs)
        with span:
            if use_fallback:
                return await self.fallback.ainvoke(input, self._child(config, run_manager), **kwargs)
            return output

    def _stream(self, inputs: Iterator[Any], run_manager: CallbackManagerForChainRun, config: RunnableConfig,
                **kwargs: Any) -> Iterator[Any]:
        (input,) = inputs
        output, use_fallback, span = self._primary(input, run_manager, config, kwargs)
        with span:
            if use_fallback:  # the fallback's answer is final: it streams as it comes
                yield from self.fallback.stream(input, self._child(config, run_manager), **kwargs)
            else:
                yield output

    async def _astream(self, inputs: AsyncIterator[Any], run_manager: AsyncCallbackManagerForChainRun,
                       config: RunnableConfig, **kwargs: Any) -> AsyncIterator[Any]:
        input = await anext(inputs)
        output, use_fallback, span = await self._aprimary(input, run_manager, config, kwargs)
        with span:
            if use_fallback:
                async for chunk in self.fallback.astream(input, self._child(config, run_manager), **kwargs):
                    yield chunk
            else:
                yield output

    def _primary(self, input: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig,
                 kwargs: dict[str, Any]) -> tuple[Any, bool, AbstractContextManager[trace.Span]]:
        """Run the primary held back from streaming consumers, decide, and release its events to
        them when its answer is kept (also on its error: errors are not rejections)."""
        reports: list[ResponseRecord] = []
        callbacks = self._scored_child(run_manager, reports)
        held = hold_streaming_consumers(callbacks)
        try:
            output = self.primary.invoke(input, patch_config(config, callbacks=callbacks), **kwargs)
            outcome, figure, use_fallback, answer = self._decide(reports)
        except BaseException as exc:
            if held is not None and isinstance(exc, ConfidenceMissing):
                held.drop()
            elif held is not None:
                held.release()
            raise
        if held is not None and use_fallback:
            held.drop()
        elif held is not None:
            held.release()
        return output, use_fallback, self._decisions.span(outcome, figure, self, answer)

    async def _aprimary(self, input: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig,
                        kwargs: dict[str, Any]) -> tuple[Any, bool, AbstractContextManager[trace.Span]]:
        reports: list[ResponseRecord] = []
        callbacks = self._scored_child(run_manager, reports)
        held = hold_streaming_consumers(callbacks)
        try:
            output = await self.primary.ainvoke(input, patch_config(config, callbacks=callbacks), **kwargs)
            outcome, figure, use_fallback, answer = self._decide(reports)
        except BaseException as exc:
            if held is not None and isinstance(exc, ConfidenceMissing):
                held.drop()
            elif held is not None:
                await held.arelease()
            raise
        if held is not None and use_fallback:
            held.drop()
        elif held is not None:
            await held.arelease()
        return output, use_fallback, self._decisions.span(outcome, figure, self, answer)

    @staticmethod
    def _scored_child(run_manager: Any, reports: list[ResponseRecord]) -> Any:
        """The primary's callbacks, with a private scorer for its model runs that exports nothing."""
        callbacks = run_manager.get_child()
        callbacks.add_handler(ConfidenceCallbackHandler(exporters=(), on_report=reports.append), inherit=True)
        return callbacks

    @staticmethod
    def _child(config: RunnableConfig, run_manager: Any) -> RunnableConfig:
        return patch_config(config, callbacks=run_manager.get_child())

    def _decide(self, records: list[ResponseRecord]
                ) -> tuple[Outcome, float | None, bool, ResponseRecord | None]:
        """The outcome for the last model run to end (choice 0), the figure it was decided on,
        whether to run the fallback, and that run's record."""
        answers = [r for r in records if r.choice_index == 0]
        answer = max(answers, key=lambda r: r.ended_at_ns) if answers else None
        kept, figure = self._judge(answer.report if answer is not None else None)
        if kept is not None:
            return ("kept", figure, False, answer) if kept else ("fell_back", figure, True, answer)
        if self.on_missing == "raise":
            self._decisions.count("missing", answer)
            raise ConfidenceMissing(f"gate {self.name!r}: no confidence figure came back for {self.metric!r} "
                                    "(no logprobs?); see on_missing")
        return "missing", None, self.on_missing == "fallback", answer

    def _judge(self, report: ConfidenceReport | None) -> tuple[bool | None, float | None]:
        if report is None or report.token_count == 0:
            return None, None
        if callable(self.metric):
            return bool(self.metric(report)), None
        if self.metric.startswith("/"):
            figure = next((f.min_token_probability for f in report.fields if f.path == self.metric), None)
        else:
            figure = getattr(report, self.metric)
        if figure is None:
            return None, None
        return figure >= self.threshold, figure


_counters: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, Counter | None]] = weakref.WeakKeyDictionary()
_counters_lock = threading.Lock()


class _Decisions:
    """Counts and traces each decision; never raises into the gate's caller."""

    def __init__(self, name: str, prefix: str, registry: CollectorRegistry | None,
                 meter_provider: metrics.MeterProvider | None, tracer_provider: trace.TracerProvider | None) -> None:
        self.name = name
        self._labels = MetricLabels()
        self._counter = _prometheus_counter(registry if registry is not None else REGISTRY, prefix)
        meter = metrics.get_meter(INSTRUMENTATION_SCOPE, package_version() or "", meter_provider)
        self._otel_counter = meter.create_counter(f"{prefix}.confidence.gate.decisions", unit="{decision}",
                                                  description="Confidence gate decisions, by gate and outcome.")
        self._tracer = trace.get_tracer(INSTRUMENTATION_SCOPE, package_version(), tracer_provider)

    def count(self, outcome: str, answer: ResponseRecord | None) -> None:
        """Count a decision, labelled like the model metrics by the primary's provider and requested
        model (``unknown`` when no model run was seen), capped the same way."""
        try:
            provider, model = self._labels.values(answer) if answer is not None else ("unknown", "unknown")
            if self._counter is not None:
                self._counter.labels(self.name, outcome, provider, model).inc()
            self._otel_counter.add(1, {f"{ATTRIBUTE_PREFIX}.name": self.name, f"{ATTRIBUTE_PREFIX}.outcome": outcome,
                                       "gen_ai.provider.name": provider, "gen_ai.request.model": model})
        except Exception as exc:  # never break the app's call
            logger.warning("observability: counting a gate decision failed (%s)", type(exc).__name__)

    def span(self, outcome: str, figure: float | None, gate: ConfidenceGate,
             answer: ResponseRecord | None) -> AbstractContextManager[trace.Span]:
        """The decision's span (a context manager); the decision is counted here too."""
        self.count(outcome, answer)
        attributes: dict[str, Any] = {
            f"{ATTRIBUTE_PREFIX}.name": self.name, f"{ATTRIBUTE_PREFIX}.outcome": outcome,
            f"{ATTRIBUTE_PREFIX}.metric": gate.metric if isinstance(gate.metric, str) else "custom",
            f"{ATTRIBUTE_PREFIX}.threshold": gate.threshold,
        }
        if figure is not None:
            attributes[f"{ATTRIBUTE_PREFIX}.figure"] = figure
        return self._tracer.start_as_current_span(f"confidence_gate {self.name}", kind=trace.SpanKind.INTERNAL,
                                                  attributes=attributes, record_exception=True,
                                                  set_status_on_exception=True)


def _prometheus_counter(registry: CollectorRegistry, prefix: str) -> Counter | None:
    """One counter per registry and prefix, shared by every gate; None if the name is taken."""
    with _counters_lock:
        per_registry = _counters.setdefault(registry, {})
        if prefix not in per_registry:
            try:
                per_registry[prefix] = Counter(f"{prefix}_confidence_gate_decisions", "Confidence gate decisions: "
                                               "kept (confident), fell_back, missing (no logprobs).",
                                               ["gate", "outcome", "provider", "model"], registry=registry)
            except ValueError:  # another collector holds the name: count in OTel only
                logger.warning("observability: %s_confidence_gate_decisions is taken in this registry; gate "
                               "decisions are not counted in Prometheus", prefix)
                per_registry[prefix] = None
        return per_registry[prefix]


async def _one(value: Any) -> AsyncIterator[Any]:
    yield value
