"""OpenTelemetry metrics: the same histograms (same buckets) and counter as the Prometheus exporter.

Instruments come from the global meter provider unless one is injected (no SDK configured →
the API's no-op instruments). Each histogram carries explicit bucket advice from
``_definitions``. Names: ``{prefix}.response.*`` and ``{prefix}.responses`` are ours; time to
first chunk is the GenAI conventions' ``gen_ai.client.operation.time_to_first_chunk`` (unit ``s``).

Attribute keys follow the GenAI registry where it has a name and stay under ``llm.confidence.``
where it has none (``ATTRIBUTE_KEYS``): ``gen_ai.provider.name`` and ``gen_ai.request.model``
(Prometheus: ``provider``, ``model``), ``llm.confidence.status`` and ``llm.confidence.logprobs``
(the span attributes of the same name; Prometheus: ``status``, ``logprobs``), and
``llm.confidence.metadata.<key>`` for each allowlisted metadata key (Prometheus: ``<key>``). The
time-to-first-chunk points also carry ``gen_ai.operation.name`` (``chat`` / ``text_completion``),
which the conventions require there. Values are the Prometheus label values (one ``MetricLabels``).

With allowlisted field paths (``field_paths``), ``{prefix}.field.min_token_probability`` records
each allowlisted field's least likely token, with the same attributes plus
``llm.confidence.field.path``. ``{prefix}.response.calibrated_probability`` records the records'
``calibrated_probability`` (only a handler with a calibration map sets one).

When the response has a span (``record.trace``), each measurement is recorded in that span's
context, so the SDK's trace-based exemplar filter links it to our span.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opentelemetry import metrics, trace
from opentelemetry.context import Context

from observability.core.types import ResponseRecord
from observability.exporters._definitions import (
    CALIBRATED_PROBABILITY,
    DEFAULT_PREFIX,
    FEEDBACK_COUNTER_DESCRIPTION,
    FEEDBACK_COUNTER_NAME,
    FIELD_MIN_TOKEN_PROBABILITY,
    HISTOGRAMS,
    INSTRUMENTATION_SCOPE,
    OPERATION_NAMES,
    RESPONSES_COUNTER_DESCRIPTION,
    RESPONSES_COUNTER_NAME,
    HistogramDefinition,
    calibrated_observation,
    check_prefix,
    confidence_bucket,
    field_observations,
    observations,
    package_version,
)
from observability.exporters._labels import DEFAULT_MAX_LABEL_VALUES, FIELD_PATH_LABEL, MetricLabels

ATTRIBUTE_KEYS = {
    "provider": "gen_ai.provider.name",
    "model": "gen_ai.request.model",
    "status": "llm.confidence.status",
    "logprobs": "llm.confidence.logprobs",
    FIELD_PATH_LABEL: "llm.confidence.field.path",
}
"""Prometheus label name → OpenTelemetry attribute key."""
METADATA_ATTRIBUTE_PREFIX = "llm.confidence.metadata."
"""An allowlisted metadata key ``k`` (Prometheus label ``k``) is the attribute ``llm.confidence.metadata.k``."""
OPERATION_NAME = "gen_ai.operation.name"


def attribute_key(label_name: str) -> str:
    """The OpenTelemetry attribute key of a Prometheus label name of ours."""
    return ATTRIBUTE_KEYS.get(label_name) or METADATA_ATTRIBUTE_PREFIX + label_name


class OpenTelemetryMetricsExporter:
    """Records each response in OpenTelemetry histograms and the ``{prefix}.responses`` counter.

    Args:
        meter_provider: where instruments come from (default: the global one).
        prefix: name prefix of our instruments (default ``llm``); the conventions' metric keeps its name.
        metadata_labels / max_label_values / field_paths / labels: as for ``PrometheusExporter``.
    """

    def __init__(self, *, meter_provider: metrics.MeterProvider | None = None, prefix: str = DEFAULT_PREFIX,
                 metadata_labels: Iterable[str] = (), max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
                 field_paths: Iterable[str] = (), labels: MetricLabels | None = None) -> None:
        self.prefix = check_prefix(prefix)
        self.labels = labels if labels is not None else MetricLabels(
            metadata_labels, max_label_values=max_label_values, field_paths=field_paths)
        meter = metrics.get_meter(INSTRUMENTATION_SCOPE, package_version() or "", meter_provider)
        def histogram(d: HistogramDefinition) -> metrics.Histogram:
            return meter.create_histogram(d.otel_instrument_name(self.prefix), unit=d.unit, description=d.description,
                                          explicit_bucket_boundaries_advisory=list(d.buckets))

        self._histograms = [histogram(d) for d in HISTOGRAMS]
        self._calibrated = histogram(CALIBRATED_PROBABILITY)  # recorded only with a calibration map
        self._with_operation = [d.semconv for d in HISTOGRAMS]
        self._responses = meter.create_counter(f"{self.prefix}.{RESPONSES_COUNTER_NAME}", unit="{response}",
                                               description=RESPONSES_COUNTER_DESCRIPTION)
        self._feedback = meter.create_counter(f"{self.prefix}.{FEEDBACK_COUNTER_NAME}", unit="{verdict}",
                                              description=FEEDBACK_COUNTER_DESCRIPTION)
        self._fields = histogram(FIELD_MIN_TOKEN_PROBABILITY) if self.labels.field_paths else None
        self._path_key = ATTRIBUTE_KEYS[FIELD_PATH_LABEL]
        self._keys = tuple(attribute_key(name) for name in self.labels.label_names)
        self._status_key, self._logprobs_key = ATTRIBUTE_KEYS["status"], ATTRIBUTE_KEYS["logprobs"]

    def export(self, records: Sequence[ResponseRecord]) -> None:
        for record in records:
            attributes = dict(zip(self._keys, self.labels.values(record), strict=True))
            context = _span_context(record)
            for index, value in observations(record):
                point = attributes
                if self._with_operation[index]:
                    point = {**attributes, OPERATION_NAME: OPERATION_NAMES.get(record.start.kind, "chat")}
                self._histograms[index].record(value, point, context=context)
            self._responses.add(1, {**attributes, self._status_key: record.status,
                                    self._logprobs_key: record.logprobs}, context=context)
            if self._fields is not None:
                for path, value in field_observations(record, self.labels.field_path):
                    self._fields.record(value, {**attributes, self._path_key: path}, context=context)
            calibrated = calibrated_observation(record)
            if calibrated is not None:
                self._calibrated.record(calibrated, attributes, context=context)

    def export_feedback(self, record: ResponseRecord, correct: bool) -> None:
        """Count one verdict on ``record`` in ``{prefix}.feedback``."""
        self._feedback.add(1, {**dict(zip(self._keys, self.labels.values(record), strict=True)),
                               "llm.confidence.feedback.outcome": "correct" if correct else "incorrect",
                               "llm.confidence.feedback.confidence": confidence_bucket(record)})


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
