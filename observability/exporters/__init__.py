"""Exporters: where finished ``ResponseRecord``s go. Each knows its SDK, nothing of LangChain.

``default_exporters()`` is the standard set, in order: OpenTelemetry spans (first: it fills
``record.trace`` for the exemplars of the others), the figures on the runs of LangSmith, Langfuse
and MLflow when they trace the same model run, OpenTelemetry metrics, Prometheus metrics.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from observability.core.types import Exporter
from observability.exporters import _peer_spans
from observability.exporters._content import CAPTURE_CONTENT_ENV
from observability.exporters._definitions import DEFAULT_PREFIX, HISTOGRAMS, HistogramDefinition
from observability.exporters._jsonl import JsonlRecorder
from observability.exporters._labels import DEFAULT_MAX_LABEL_VALUES, MetricLabels
from observability.exporters._otel_metrics import OpenTelemetryMetricsExporter
from observability.exporters._otel_spans import OpenTelemetryTracingExporter, PeerSpans
from observability.exporters._prometheus import PrometheusExporter

__all__ = [
    "CAPTURE_CONTENT_ENV",
    "DEFAULT_MAX_LABEL_VALUES",
    "DEFAULT_PREFIX",
    "HISTOGRAMS",
    "Exporter",
    "HistogramDefinition",
    "JsonlRecorder",
    "MetricLabels",
    "OpenTelemetryMetricsExporter",
    "OpenTelemetryTracingExporter",
    "PeerSpans",
    "PrometheusExporter",
    "default_exporters",
]


def default_exporters(*, tracer_provider: TracerProvider | None = None,
                      meter_provider: MeterProvider | None = None,
                      registry: CollectorRegistry | None = None, prefix: str = DEFAULT_PREFIX,
                      capture_content: bool | None = None, trace_run_tree: bool = False,
                      metadata_labels: Iterable[str] = (),
                      max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
                      field_paths: Iterable[str] = (), peer_spans: PeerSpans = "auto") -> list[Exporter]:
    """The exporters a handler gets when none are given: spans, other tracers' runs, OTel metrics, Prometheus metrics.

    Every sink defaults to the process-wide one (global tracer and meter providers,
    prometheus_client's ``REGISTRY``). ``metadata_labels`` / ``max_label_values`` are shared by
    both metric systems (one ``MetricLabels``), so they agree on which values became ``other``.
    ``field_paths`` (JSON Pointers such as ``("/name", "/age")``, ``*`` for any one segment) are the
    fields of JSON answers whose least likely token is observed per path in both metric systems;
    every field still gets its span event. ``peer_spans`` says where a run's confidence goes when
    another tracer traces it too (see ``OpenTelemetryTracingExporter``); with ``"never"`` the runs
    of LangSmith, Langfuse and MLflow are left as they are as well (docs/peer-tracers.md).
    """
    labels = MetricLabels(metadata_labels, max_label_values=max_label_values, field_paths=field_paths)
    exporters: list[Exporter] = [
        OpenTelemetryTracingExporter(tracer_provider=tracer_provider, capture_content=capture_content,
                                     trace_run_tree=trace_run_tree, peer_spans=peer_spans),
        OpenTelemetryMetricsExporter(meter_provider=meter_provider, prefix=prefix, labels=labels),
        PrometheusExporter(registry=registry, prefix=prefix, labels=labels),
    ]
    if peer_spans != "never":  # the LangChain layer's step that annotates other tracers' runs
        exporters[1:1] = _peer_spans.run_exporters()
    return exporters
