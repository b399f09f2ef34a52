"""OpenTelemetry metrics: the same histograms and counter as the Prometheus exporter, dotted names.

Instruments come from the global meter provider unless one is injected (no SDK configured →
the API's no-op instruments). Each histogram carries explicit bucket advice from
``_definitions``. Attribute keys are the Prometheus label names (``provider``, ``model``,
``status``, ``logprobs`` and the allowlisted metadata keys), so one dashboard reads both paths:
an OTLP → Prometheus pipeline turns ``llm.response.sequence_probability`` into
``llm_response_sequence_probability``, ``llm.time_to_first_token`` (unit ``s``) into
``llm_time_to_first_token_seconds`` and ``llm.responses`` into ``llm_responses_total``.

When the response has a span (``record.trace``), each measurement is recorded in that span's
context, so the SDK's trace-based exemplar filter links it to our span.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opentelemetry import metrics, trace
from opentelemetry.context import Context

from observability._types import ResponseRecord
from observability.exporters._definitions import (
    DEFAULT_PREFIX,
    HISTOGRAMS,
    INSTRUMENTATION_SCOPE,
    RESPONSES_COUNTER_DESCRIPTION,
    RESPONSES_COUNTER_NAME,
    check_prefix,
    observations,
    package_version,
)
from observability.exporters._labels import DEFAULT_MAX_LABEL_VALUES, MetricLabels


class OpenTelemetryMetricsExporter:
    """Records each response in OpenTelemetry histograms and the ``{prefix}.responses`` counter.

    Args:
        meter_provider: where instruments come from (default: the global one).
        prefix: instrument name prefix (default ``llm``).
        metadata_labels / max_label_values / labels: as for ``PrometheusExporter``.
    """

    def __init__(self, *, meter_provider: metrics.MeterProvider | None = None, prefix: str = DEFAULT_PREFIX,
                 metadata_labels: Iterable[str] = (), max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
                 labels: MetricLabels | None = None) -> None:
        self.prefix = check_prefix(prefix)
        self.labels = labels if labels is not None else MetricLabels(metadata_labels,
                                                                     max_label_values=max_label_values)
        meter = metrics.get_meter(INSTRUMENTATION_SCOPE, package_version() or "", meter_provider)
        self._histograms = [
            meter.create_histogram(f"{self.prefix}.{d.otel_name}", unit=d.unit, description=d.description,
                                   explicit_bucket_boundaries_advisory=list(d.otel_buckets))
            for d in HISTOGRAMS
        ]
        self._negated = [d.otel_negated for d in HISTOGRAMS]
        self._responses = meter.create_counter(f"{self.prefix}.{RESPONSES_COUNTER_NAME}", unit="{response}",
                                               description=RESPONSES_COUNTER_DESCRIPTION)

    def export(self, records: Sequence[ResponseRecord]) -> None:
        names = self.labels.label_names
        for record in records:
            attributes = dict(zip(names, self.labels.values(record), strict=True))
            context = _span_context(record)
            for index, value in observations(record):
                self._histograms[index].record(-value if self._negated[index] else value, attributes,
                                               context=context)
            self._responses.add(1, {**attributes, "status": record.status, "logprobs": record.logprobs},
                                context=context)


def _span_context(record: ResponseRecord) -> Context | None:
    """A context holding the record's span (from ``record.trace``), for exemplars; else None."""
    trace_id = record.trace.get("trace_id")
    span_id = record.trace.get("span_id")
    if not trace_id or not span_id:
        return None
    try:
        span_context = trace.SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=False,
                                         trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
    except ValueError:
        return None
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context))
