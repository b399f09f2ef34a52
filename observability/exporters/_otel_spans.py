"""OpenTelemetry spans: one CLIENT span per model run, optionally one per chain/tool/retriever run.

A model run's span is made when its records arrive, with the run's own start and end times, and
parented on the context that was current when the run started (captured in ``on_run_start``;
we never attach or detach context inside a callback, which may run on another thread). With
``trace_run_tree=True`` chain/tool/retriever runs get spans too (started in ``on_run_start``,
ended in ``on_run_end``) and a model span's parent is its parent run's span.

Names: every ``gen_ai.*`` attribute and event is the GenAI semantic conventions' (checked against
the installed ``opentelemetry-semantic-conventions`` registry by tests/test_export_conventions.py);
ours are ``llm.confidence.*``. ``gen_ai.provider.name`` is the registry's value for the run's
``ls_provider`` (``_providers.provider_name``, the table the metric labels use too).

Per-run state is two dicts, bounded by ``max_open_runs`` (oldest dropped first) and popped when
the run's records arrive or the run ends. Attributes are set only on a recording span, so with
no tracer provider configured the cost is one no-op span per run.

Peer tracers (``peer_spans``): when OpenInference or OpenLLMetry traces the same model run, the
``llm.confidence.*`` attributes and our events go onto their still-open LLM span and we make no
span of our own (``observability.langchain.peers`` finds it and makes sure we see the run's end first;
docs/peer-tracers.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal
from uuid import UUID

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode

from observability.core.text import token_offsets
from observability.core.types import FieldConfidence, ResponseRecord, RunEvicted, RunStart
from observability.exporters import _peer_spans
from observability.exporters._content import resolve_capture_content
from observability.exporters._definitions import INSTRUMENTATION_SCOPE, OPERATION_NAMES, finite, package_version
from observability.exporters._providers import provider_name
from observability.exporters._strings import utf8_safe

DEFAULT_MAX_OPEN_RUNS = 10_000
MAX_CONTENT_EVENTS = 100
"""At most this many low-confidence token events per span (the lowest-probability ones first)."""
CONFIDENCE_PREFIX = "llm.confidence."
REPORT_FIELDS = ("token_count", "skipped", "low_confidence_threshold", "sequence_logprob", "mean_logprob",
                 "perplexity", "sequence_probability", "min_token_probability", "low_confidence_ratio",
                 "mean_token_entropy", "mean_token_negentropy", "mean_top_margin", "top_k_mass")
"""``ConfidenceReport`` fields exported as ``llm.confidence.<field>`` span attributes."""
HEADLINE_SCORES = ("sequence_probability", "min_token_probability", "low_confidence_ratio")
"""Scores also sent as ``gen_ai.evaluation.result`` span events."""
EVALUATION_EVENT = "gen_ai.evaluation.result"
LOW_CONFIDENCE_TOKEN_EVENT = "llm.confidence.low_confidence_token"
FIELD_EVENT = "llm.confidence.field"
MAX_FIELD_EVENTS = 100
"""At most this many ``llm.confidence.field`` events per choice (the least confident fields, in
document order); ``llm.confidence.field_count`` says how many leaves the answer had."""
LOW, HIGH = "low", "high"
"""``gen_ai.evaluation.score.label`` values. The label reads the figure as a confidence and compares
it with the report's low-confidence threshold t (the one that marks a token as doubtful): a
probability (``sequence_probability``, ``min_token_probability``) is ``low`` below t; for
``low_confidence_ratio`` the confidence is the share of confident tokens, 1 - ratio, so the label
is ``low`` when ratio > 1 - t (with the default t = 0.5: more than half the tokens doubtful).
A figure exactly at the bound is ``high``, as a token exactly at t is not doubtful."""
_MODEL_KINDS = frozenset(OPERATION_NAMES)
PeerSpans = Literal["auto", "always", "never"]
PEER_SPANS_CHOICES: tuple[PeerSpans, ...] = ("auto", "always", "never")


class OpenTelemetryTracingExporter:
    """Turns each model run into an OpenTelemetry span (GenAI conventions + ``llm.confidence.*``).

    Args:
        tracer_provider: where spans go (default: the global one; none configured → no-op).
        capture_content: send low-confidence token texts and their alternatives as span events.
            None (default) reads ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``.
        trace_run_tree: also make spans for chain/tool/retriever runs, so the LangChain run tree
            is a trace of its own.
        max_open_runs: bound on runs tracked between start and end.
        peer_spans: where a model run's confidence goes when OpenInference or OpenLLMetry traces
            the run too. ``"auto"`` (default): onto their LLM span, and no span of ours; ours when
            no peer has a span for the run (or a peer's internals are not the ones we know:
            logged once). ``"never"``: always a span of ours (two LLM spans with a peer).
            ``"always"``: never a span of ours; a run without a peer span gets none (metrics only).

    Fills ``record.trace`` with ``trace_id`` / ``span_id`` (hex) when the span is sampled, so
    exporters after this one can link to it (Prometheus exemplars).
    """

    def __init__(self, *, tracer_provider: trace.TracerProvider | None = None,
                 capture_content: bool | None = None, trace_run_tree: bool = False,
                 max_open_runs: int = DEFAULT_MAX_OPEN_RUNS, peer_spans: PeerSpans = "auto") -> None:
        if isinstance(max_open_runs, bool) or not isinstance(max_open_runs, int) or max_open_runs < 1:
            raise ValueError(f"max_open_runs must be a positive int, got {max_open_runs!r}")
        if peer_spans not in PEER_SPANS_CHOICES:
            raise ValueError(f"peer_spans must be one of {PEER_SPANS_CHOICES}, got {peer_spans!r}")
        self.peer_spans: PeerSpans = peer_spans
        if peer_spans != "never":
            _peer_spans.install()
        self.capture_content = resolve_capture_content(capture_content)
        self.trace_run_tree = bool(trace_run_tree)
        self.max_open_runs = max_open_runs
        self.dropped_runs = 0
        self._tracer = trace.get_tracer(INSTRUMENTATION_SCOPE, package_version(), tracer_provider)
        self._parents: dict[UUID, Context] = {}  # model runs: where their span will hang
        self._run_spans: dict[UUID, Span] = {}  # chain/tool/retriever runs (trace_run_tree only)
        self._lock = threading.Lock()

    @property
    def open_runs(self) -> int:
        return len(self._parents) + len(self._run_spans)

    def on_run_start(self, start: RunStart) -> None:
        if start.kind in _MODEL_KINDS:
            parent = self._parent_context(start.parent_run_id)
            with self._lock:
                self._bound(self._parents)
                self._parents[start.run_id] = parent
        elif self.trace_run_tree:
            attributes: dict[str, Any] = {"llm.confidence.run.kind": start.kind}
            name = start.name
            if start.kind == "tool":
                attributes.update({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": start.name})
                name = f"execute_tool {start.name}"
            span = self._tracer.start_span(name, context=self._parent_context(start.parent_run_id),
                                           kind=SpanKind.INTERNAL, attributes=attributes,
                                           start_time=start.started_at_ns)
            with self._lock:
                self._bound(self._run_spans)
                self._run_spans[start.run_id] = span

    def on_run_end(self, run_id: UUID, ended_at_ns: int, error: BaseException | None) -> None:
        with self._lock:
            self._parents.pop(run_id, None)
            span = self._run_spans.pop(run_id, None)
        if span is not None:
            _end_run_span(span, ended_at_ns, error)

    def export(self, records: Sequence[ResponseRecord]) -> None:
        if not records:
            return
        first = records[0]
        start = first.start
        with self._lock:
            parent = self._parents.pop(start.run_id, None)
        if parent is None:  # on_run_start was not called (exporter used on its own)
            parent = self._parent_context(start.parent_run_id)
        if self.peer_spans != "never" and self._onto_peer_spans(records):
            return
        operation = OPERATION_NAMES.get(start.kind, "chat")
        model = start.request_model or first.model
        span = self._tracer.start_span(f"{operation} {model}" if model else operation, context=parent,
                                       kind=SpanKind.CLIENT, start_time=start.started_at_ns,
                                       attributes={"gen_ai.operation.name": operation})
        if span.is_recording():
            self._describe(span, records)
            _link(span, records)
        span.end(end_time=max(record.ended_at_ns for record in records))

    def _onto_peer_spans(self, records: Sequence[ResponseRecord]) -> bool:
        """Put the confidence on the peers' open spans of this run; False when ours is to be made."""
        peers = _peer_spans.RUN_PEERS.get()
        spans = peers.spans if peers is not None and peers.run_id == records[0].start.run_id else []
        if not spans:  # no peer span, or a peer we no longer know (None)
            return self.peer_spans == "always"
        described = False
        for span in spans:
            if not isinstance(span, Span):
                continue
            if span.is_recording():
                self._set_confidence(span, records)
                if not described:
                    _link(span, records)
                described = True
            elif getattr(span, "end_time", None) is not None:  # ended before our handler saw the end
                _peer_spans.log_once("ordering", "a peer ended its span before our handler saw the run end")
        return described or self.peer_spans == "always"

    def _parent_context(self, parent_run_id: UUID | None) -> Context:
        if parent_run_id is not None:
            parent_span = self._run_spans.get(parent_run_id)
            if parent_span is not None:
                return trace.set_span_in_context(parent_span)
        return otel_context.get_current()

    def _bound(self, runs: dict[UUID, Any]) -> None:
        while len(runs) >= self.max_open_runs:  # a run that never ends must not leak
            dropped = runs.pop(next(iter(runs)))
            self.dropped_runs += 1
            if isinstance(dropped, Span):  # a started run-tree span: ended, saying why
                _end_run_span(dropped, time.time_ns(), RunEvicted(
                    f"more than max_open_runs={self.max_open_runs} runs were open at once in this exporter; "
                    "this run's span was ended before the run ended"))

    def _describe(self, span: Span, records: Sequence[ResponseRecord]) -> None:
        first = records[0]
        start = first.start
        attributes: dict[str, Any] = {
            "gen_ai.provider.name": provider_name(start.provider),
            "gen_ai.request.model": start.request_model,
            "gen_ai.response.model": first.response_model,
            "gen_ai.request.max_tokens": start.max_tokens,
            "gen_ai.response.id": first.response_id,
            "gen_ai.usage.input_tokens": first.input_tokens,
            "gen_ai.usage.output_tokens": first.output_tokens,
        }
        temperature = finite(start.temperature)
        if temperature is not None:
            attributes["gen_ai.request.temperature"] = temperature
        finish_reasons = [r.finish_reason for r in records if r.finish_reason]
        if finish_reasons:
            attributes["gen_ai.response.finish_reasons"] = finish_reasons
        if len(records) > 1:
            attributes["gen_ai.request.choice.count"] = len(records)
        # A streamed run: one whose start asked to stream (known before any chunk, so a stream
        # that fails before its first chunk says so too), or whose first chunk was seen (the
        # handler times it; `.stream()` decides after the start). Set if and only if it streamed.
        first_chunk = finite(first.time_to_first_token_seconds)
        if start.stream_requested or first_chunk is not None:
            attributes["gen_ai.request.stream"] = True
        if first_chunk is not None:
            attributes["gen_ai.response.time_to_first_chunk"] = first_chunk
        if first.status == "error":
            attributes["error.type"] = first.error_type or "_OTHER"
            span.set_status(StatusCode.ERROR, first.error_type)
        span.set_attributes({key: value for key, value in attributes.items() if value is not None})
        self._set_confidence(span, records)

    def _set_confidence(self, span: Span, records: Sequence[ResponseRecord]) -> None:
        """What we add to any LLM span, ours or a peer's: ``llm.confidence.*`` and our events."""
        span.set_attributes(confidence_attributes(records))
        for record in records:
            self._events(span, record, len(records) > 1)

    def _events(self, span: Span, record: ResponseRecord, several: bool) -> None:
        report = record.report
        if report is None:
            return
        choice: dict[str, Any] = {"llm.confidence.choice_index": record.choice_index} if several else {}
        response_id = {"gen_ai.response.id": record.response_id} if record.response_id else {}
        for name in HEADLINE_SCORES:
            value = finite(getattr(report, name))
            if value is not None:
                span.add_event(EVALUATION_EVENT, {
                    "gen_ai.evaluation.name": name,
                    "gen_ai.evaluation.score.value": value,
                    "gen_ai.evaluation.score.label": score_label(name, value, report.low_confidence_threshold),
                    **response_id, **choice,
                }, timestamp=record.ended_at_ns)
        self._field_events(span, record, choice)
        if self.capture_content and record.tokens:
            threshold = report.low_confidence_threshold
            low = [(index, token) for index, token in enumerate(record.tokens)
                   if finite(token.logprob) is not None and _probability(token.logprob) < threshold]
            low.sort(key=lambda item: item[1].logprob)
            for index, token in sorted(low[:MAX_CONTENT_EVENTS], key=lambda item: item[0]):
                alternatives = [(utf8_safe(text or ""), lp) for text, lp in token.top_logprobs
                                if finite(lp) is not None]
                span.add_event(LOW_CONFIDENCE_TOKEN_EVENT, {
                    "llm.confidence.token.index": index,
                    "llm.confidence.token.text": utf8_safe(token.token or ""),
                    "llm.confidence.token.probability": _probability(token.logprob),
                    "llm.confidence.token.alternatives": [text for text, _ in alternatives],
                    "llm.confidence.token.alternative_probabilities": [_probability(lp) for _, lp in alternatives],
                    **choice,
                }, timestamp=record.ended_at_ns)

    def _field_events(self, span: Span, record: ResponseRecord, choice: dict[str, Any]) -> None:
        """One ``llm.confidence.field`` event per leaf of a JSON answer: its path and figures.
        The value's text and the alternatives' texts are content: only with capture on."""
        report = record.report
        if report is None or not report.fields:
            return
        fields = list(report.fields)
        if len(fields) > MAX_FIELD_EVENTS:
            order = sorted(range(len(fields)), key=lambda i: _least_first(fields[i]))
            fields = [fields[i] for i in sorted(order[:MAX_FIELD_EVENTS])]
        text = token_offsets(record.tokens)[0] if self.capture_content and record.tokens else None
        for field in fields:
            attributes: dict[str, Any] = {
                "llm.confidence.field.path": utf8_safe(field.path),
                "llm.confidence.field.start": field.start,
                "llm.confidence.field.end": field.end,
                "llm.confidence.field.token_count": field.token_count,
            }
            if field.duplicate_key:
                attributes["llm.confidence.field.duplicate_key"] = True
            for name in ("sequence_logprob", "mean_logprob", "min_token_probability"):
                value = finite(getattr(field, name))
                if value is not None:
                    attributes[f"llm.confidence.field.{name}"] = value
            alternatives = [(text_, p) for text_, p in field.alternatives if finite(p) is not None]
            if alternatives:
                attributes["llm.confidence.field.alternative_probabilities"] = [float(p) for _, p in alternatives]
            if self.capture_content:
                if alternatives:
                    attributes["llm.confidence.field.alternatives"] = [utf8_safe(t or "") for t, _ in alternatives]
                if text is not None and 0 <= field.start <= field.end <= len(text):
                    attributes["llm.confidence.field.value"] = utf8_safe(text[field.start:field.end])
            span.add_event(FIELD_EVENT, {**attributes, **choice}, timestamp=record.ended_at_ns)


def confidence_attributes(records: Sequence[ResponseRecord]) -> dict[str, Any]:
    """The ``llm.confidence.*`` figures of a model run (its first choice), as span attributes and,
    for tracers that are not OpenTelemetry, as their run's metadata (observability.langchain.tracer_runs)."""
    first = records[0]
    attributes: dict[str, Any] = {"llm.confidence.status": first.status, "llm.confidence.logprobs": first.logprobs}
    report = first.report
    if report is not None:
        for name in REPORT_FIELDS:
            value = finite(getattr(report, name))
            if value is not None:
                attributes[CONFIDENCE_PREFIX + name] = int(value) if name in ("token_count", "skipped") else value
        attributes["llm.confidence.low_confidence_span_count"] = len(report.low_confidence_spans)
        if report.fields:
            attributes["llm.confidence.field_count"] = len(report.fields)
            least = min(report.fields, key=_least_first)
            least_probability = finite(least.min_token_probability)
            if least_probability is not None:
                attributes["llm.confidence.least_sure_field.path"] = utf8_safe(least.path)
                attributes["llm.confidence.least_sure_field.min_token_probability"] = least_probability
    calibrated = finite(first.calibrated_probability)
    if calibrated is not None:
        attributes["llm.confidence.calibrated_probability"] = calibrated
    return attributes


def _least_first(field: FieldConfidence) -> float:
    value = finite(field.min_token_probability)
    return 2.0 if value is None else value


def score_label(name: str, value: float, threshold: float) -> str:
    """``low`` / ``high`` for a headline score (the rule is in ``LOW``'s docstring)."""
    if name == "low_confidence_ratio":
        return LOW if value > 1.0 - threshold else HIGH
    return LOW if value < threshold else HIGH


def _end_run_span(span: Span, ended_at_ns: int, error: BaseException | None) -> None:
    """End a chain/tool/retriever span; an error sets its status (a broken-off stream or a
    cancelled task is not an error). An eviction says why in the status description."""
    if error is not None and isinstance(error, Exception):
        name = type(error).__qualname__
        span.set_status(StatusCode.ERROR, f"{name}: {error}" if isinstance(error, RunEvicted) else name)
        span.set_attribute("error.type", name)
    span.end(end_time=ended_at_ns)


def _link(span: Span, records: Sequence[ResponseRecord]) -> None:
    """Fill ``record.trace`` with the span's ids when it is sampled (for exemplars)."""
    span_context = span.get_span_context()
    if span_context.trace_flags.sampled:
        ids = {"trace_id": format(span_context.trace_id, "032x"), "span_id": format(span_context.span_id, "016x")}
        for record in records:
            record.trace.update(ids)


def _probability(logprob: float) -> float:
    return math.exp(min(logprob, 0.0))
