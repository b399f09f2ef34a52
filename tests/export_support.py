"""Helpers for the exporter tests: in-memory OpenTelemetry SDK sinks and hand-made records."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from observability import ConfidenceReport, ResponseRecord, RunStart, TokenLogprob
from observability.testing import InMemoryTelemetry

SDK_REPORT_FIELDS = ("sequence_logprob", "mean_logprob", "perplexity", "sequence_probability",
                     "min_token_probability", "low_confidence_ratio", "mean_token_entropy",
                     "mean_token_negentropy", "mean_top_margin", "top_k_mass", "low_confidence_threshold")


class OtelSinks(InMemoryTelemetry):
    """``observability.testing``'s in-memory sinks, plus each instrument's data points."""

    def spans(self) -> list[ReadableSpan]:  # type: ignore[override]
        return list(super().spans())

    def metric_points(self, name: str) -> list[Any]:
        """All data points of the instrument called ``name`` (collects: exemplars are reset after)."""
        return self.all_metric_points().get(name, [])

    def all_metric_points(self) -> dict[str, list[Any]]:
        """One collection: instrument name → its data points."""
        data = self.metrics()
        points: dict[str, list[Any]] = {}
        if data is None:
            return {}
        for resource_metrics in data.resource_metrics:
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    points.setdefault(metric.name, []).extend(metric.data.data_points)
        return points


def make_record(*, status: str = "ok", report: ConfidenceReport | None = None, provider: str | None = "openai",
                model: str | None = "m-1", metadata: dict[str, object] | None = None,
                tokens: tuple[TokenLogprob, ...] = (), first_token_after: float | None = None,
                kind: str = "chat", **record_fields: Any) -> ResponseRecord:
    """A record as the handler would build it, with chosen values (for edge cases a model won't give).
    ``first_token_after`` (seconds) sets both the wall-clock and the monotonic first-token times;
    ``record_fields`` are any other ``ResponseRecord`` fields (``response_id``, ``text`` …)."""
    started = time.time_ns() - 2_000_000_000
    start = RunStart(run_id=uuid.uuid4(), parent_run_id=None, kind=kind, name="ChatOpenAI", started_at_ns=started,
                     provider=provider, request_model=model, metadata=metadata or {})
    return ResponseRecord(start=start, status=status, logprobs="present" if report else "not_requested",  # type: ignore[arg-type]
                          report=report, choice_index=0, ended_at_ns=started + 1_500_000_000,
                          first_token_at_ns=None if first_token_after is None
                          else started + int(first_token_after * 1e9),
                          time_to_first_token_ns=None if first_token_after is None else int(first_token_after * 1e9),
                          duration_ns=1_500_000_000, tokens=tokens, **record_fields)


def make_report(**values: Any) -> ConfidenceReport:
    base: dict[str, Any] = dict(token_count=4, skipped=0, low_confidence_threshold=0.5, sequence_logprob=-0.4,
                                mean_logprob=-0.1, perplexity=math.exp(0.1), sequence_probability=math.exp(-0.1),
                                min_token_probability=0.6, low_confidence_ratio=0.0, mean_token_entropy=0.3,
                                mean_token_negentropy=0.7, mean_top_margin=0.8, top_k_mass=0.95)
    base.update(values)
    return ConfidenceReport(**base)


def json_tokens(pieces: list[str], logprobs: list[float] | None = None) -> tuple[TokenLogprob, ...]:
    """Tokens spelling a JSON answer piece by piece, each with two alternatives (best first)."""
    lps = logprobs or [-0.05 * (i + 1) for i in range(len(pieces))]
    return tuple(TokenLogprob(piece, piece.encode(), lp, ((piece, lp), (f"zqx{i}", lp - 2.0)))
                 for i, (piece, lp) in enumerate(zip(pieces, lps, strict=True)))


def json_record(pieces: list[str], logprobs: list[float] | None = None, **options: Any) -> ResponseRecord:
    """A record of a JSON answer whose report carries ``field_confidence`` of its tokens."""
    from observability import field_confidence

    tokens = json_tokens(pieces, logprobs)
    fields = field_confidence(tokens)
    assert fields, "the pieces do not spell a JSON object or array"
    return make_record(report=make_report(fields=fields), tokens=tokens, text="".join(pieces), **options)
