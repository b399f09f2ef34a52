"""Prometheus metrics through ``prometheus_client``: the histograms of ``_definitions.HISTOGRAMS``
and ``{prefix}_responses_total``, with exemplars pointing at our spans; with allowlisted field
paths, also ``{prefix}_field_min_token_probability`` (the same labels plus ``path``); with a
calibration map on the handler, ``{prefix}_response_calibrated_probability`` (made by the first
calibrated response).

Collectors are created once per (registry, prefix, label names) and shared: two handlers on one
registry update the same metric objects instead of colliding. If a registry already holds a
metric of ours under the same name that is not ours (another library, or our own prefix with
other label names), that one metric is dropped: logged once, listed in ``dropped_metrics``, and
everything else keeps working.

Exemplars (``trace_id``, ``span_id`` of the response's span, when a tracing exporter before us
made a sampled span) are only visible in OpenMetrics exposition, and prometheus_client does not
keep them in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), so there we do not build them.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, values

from observability.core.types import ResponseRecord
from observability.exporters._definitions import (
    CALIBRATED_PROBABILITY,
    DEFAULT_PREFIX,
    FEEDBACK_COUNTER_DESCRIPTION,
    FEEDBACK_COUNTER_NAME,
    FIELD_MIN_TOKEN_PROBABILITY,
    HISTOGRAMS,
    RESPONSES_COUNTER_DESCRIPTION,
    RESPONSES_COUNTER_NAME,
    HistogramDefinition,
    calibrated_observation,
    check_prefix,
    confidence_bucket,
    field_observations,
    observations,
)
from observability.exporters._labels import DEFAULT_MAX_LABEL_VALUES, FIELD_PATH_LABEL, MetricLabels

logger = logging.getLogger("observability")


@dataclass
class _Collectors:
    histograms: list[Histogram | None]
    responses: Counter | None
    dropped: list[str] = field(default_factory=list)
    fields: Histogram | None = None
    fields_tried: bool = False
    feedback: Counter | None = None
    feedback_tried: bool = False
    calibrated: Histogram | None = None
    calibrated_tried: bool = False


_cache: weakref.WeakKeyDictionary[CollectorRegistry, dict[tuple[str, tuple[str, ...]], _Collectors]] = (
    weakref.WeakKeyDictionary()
)
_cache_lock = threading.Lock()


def _collectors(registry: CollectorRegistry, prefix: str, label_names: tuple[str, ...],
                with_fields: bool = False) -> _Collectors:
    with _cache_lock:
        per_registry = _cache.setdefault(registry, {})
        found = per_registry.get((prefix, label_names))
        if found is None:
            found = per_registry[(prefix, label_names)] = _create(registry, prefix, label_names)
        if with_fields and not found.fields_tried:  # made once, by the first exporter with field paths
            found.fields_tried = True
            found.fields = _histogram(registry, prefix, FIELD_MIN_TOKEN_PROBABILITY,
                                      (*label_names, FIELD_PATH_LABEL), found.dropped)
        return found


def _histogram(registry: CollectorRegistry, prefix: str, definition: HistogramDefinition,
               label_names: tuple[str, ...], dropped: list[str]) -> Histogram | None:
    """One histogram of ours, or None (listed in ``dropped``, logged) when its name is taken."""
    name = f"{prefix}_{definition.name}"
    try:
        return Histogram(name, definition.description, label_names, registry=registry, buckets=definition.buckets,
                         unit="seconds" if name.endswith("_seconds") else "")
    except ValueError as exc:  # the name is taken in this registry by a metric that is not ours
        dropped.append(name)
        _log_dropped(name, exc)
        return None


def _create(registry: CollectorRegistry, prefix: str, label_names: tuple[str, ...]) -> _Collectors:
    made = _Collectors(histograms=[], responses=None)
    for definition in HISTOGRAMS:
        made.histograms.append(_histogram(registry, prefix, definition, label_names, made.dropped))
    name = f"{prefix}_{RESPONSES_COUNTER_NAME}"
    try:
        made.responses = Counter(name, RESPONSES_COUNTER_DESCRIPTION, (*label_names, "status", "logprobs"),
                                 registry=registry)
    except ValueError as exc:
        made.dropped.append(f"{name}_total")
        _log_dropped(f"{name}_total", exc)
    return made


def _log_dropped(name: str, exc: Exception) -> None:
    logger.warning("observability: Prometheus metric %s is already registered by something else in this "
                   "registry (%s); it will not be recorded. Use another prefix or registry.", name, exc)


def multiprocess_mode() -> bool:
    """True when prometheus_client writes values to ``PROMETHEUS_MULTIPROC_DIR`` (no exemplars there)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


class PrometheusExporter:
    """Records each response in Prometheus histograms and the ``{prefix}_responses_total`` counter.

    Args:
        registry: where the metrics live (default: prometheus_client's global ``REGISTRY``).
            Serving ``/metrics`` is the app's business (e.g. ``prometheus_client.start_http_server``).
        prefix: metric name prefix (default ``llm``).
        metadata_labels: run metadata keys to add as labels (opt-in; see ``MetricLabels``).
        max_label_values: cap on distinct values per metadata label; beyond it values read ``other``.
        field_paths: JSON Pointer paths of JSON answers' fields to observe in
            ``{prefix}_field_min_token_probability`` under the label ``path`` (see ``MetricLabels``).
        labels: a ``MetricLabels`` to share with other exporters (overrides the three above).
    """

    def __init__(self, *, registry: CollectorRegistry | None = None, prefix: str = DEFAULT_PREFIX,
                 metadata_labels: Iterable[str] = (), max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
                 field_paths: Iterable[str] = (), labels: MetricLabels | None = None) -> None:
        self.registry = registry if registry is not None else REGISTRY
        self.prefix = check_prefix(prefix)
        self.labels = labels if labels is not None else MetricLabels(
            metadata_labels, max_label_values=max_label_values, field_paths=field_paths)
        self._metrics = _collectors(self.registry, self.prefix, self.labels.label_names,
                                    with_fields=bool(self.labels.field_paths))
        self._exemplars = not multiprocess_mode()

    @property
    def dropped_metrics(self) -> tuple[str, ...]:
        """Names not recorded because the registry already held a different metric of that name."""
        return tuple(self._metrics.dropped)

    def export(self, records: Sequence[ResponseRecord]) -> None:
        metrics = self._metrics
        for record in records:
            label_values = self.labels.values(record)
            exemplar = self._exemplar(record)
            for index, value in observations(record):
                histogram = metrics.histograms[index]
                if histogram is not None:
                    histogram.labels(*label_values).observe(value, exemplar)
            if metrics.responses is not None:
                metrics.responses.labels(*label_values, record.status, record.logprobs).inc(1, exemplar)
            if metrics.fields is not None and self.labels.field_paths:
                for path, value in field_observations(record, self.labels.field_path):
                    metrics.fields.labels(*label_values, path).observe(value, exemplar)
            calibrated = calibrated_observation(record)
            if calibrated is not None:
                histogram = self._calibrated_histogram()
                if histogram is not None:
                    histogram.labels(*label_values).observe(calibrated, exemplar)

    def _calibrated_histogram(self) -> Histogram | None:
        """``{prefix}_response_calibrated_probability``, made by the first calibrated response."""
        metrics = self._metrics
        if not metrics.calibrated_tried:
            with _cache_lock:
                if not metrics.calibrated_tried:
                    metrics.calibrated = _histogram(self.registry, self.prefix, CALIBRATED_PROBABILITY,
                                                    self.labels.label_names, metrics.dropped)
                    metrics.calibrated_tried = True
        return metrics.calibrated

    def _exemplar(self, record: ResponseRecord) -> dict[str, str] | None:
        if not self._exemplars:
            return None
        trace_id = record.trace.get("trace_id")
        span_id = record.trace.get("span_id")
        if not trace_id or not span_id:
            return None
        return {"trace_id": trace_id, "span_id": span_id}

    def export_feedback(self, record: ResponseRecord, correct: bool) -> None:
        """Count one verdict on ``record`` in ``{prefix}_feedback_total`` (made on first use)."""
        metrics = self._metrics
        if not metrics.feedback_tried:
            with _cache_lock:
                if not metrics.feedback_tried:
                    name = f"{self.prefix}_{FEEDBACK_COUNTER_NAME}"
                    try:
                        metrics.feedback = Counter(name, FEEDBACK_COUNTER_DESCRIPTION,
                                                   (*self.labels.label_names, "outcome", "confidence"),
                                                   registry=self.registry)
                    except ValueError as exc:
                        metrics.dropped.append(f"{name}_total")
                        _log_dropped(f"{name}_total", exc)
                    metrics.feedback_tried = True
        if metrics.feedback is not None:
            metrics.feedback.labels(*self.labels.values(record), "correct" if correct else "incorrect",
                                    confidence_bucket(record)).inc()
