"""Confidence metrics from token logprobs for LangChain apps, exported to OpenTelemetry and Prometheus."""

from observability._attach import activate_from_env as _activate_from_env
from observability._attach import observe_confidence
from observability._config import AttachConfig, ConfigError
from observability._extract import extract_token_logprobs
from observability._field_confidence import field_confidence
from observability._gate import ConfidenceGate, ConfidenceMissing, confidence_fallback
from observability._handler import ConfidenceCallbackHandler
from observability._heatmap import render_heatmap, summary_line
from observability._html_report import render_html_report, write_html_report
from observability._score import DEFAULT_LOW_CONFIDENCE_THRESHOLD, score_confidence
from observability._text import token_offsets
from observability._types import (
    ConfidenceReport,
    Exporter,
    FieldConfidence,
    LogprobsStatus,
    LowConfidenceSpan,
    ResponseRecord,
    RunStart,
    Status,
    TokenLogprob,
    TokenLogprobs,
)
from observability.exporters import (
    MetricLabels,
    OpenTelemetryMetricsExporter,
    OpenTelemetryTracingExporter,
    PrometheusExporter,
    default_exporters,
)
from observability.exporters._jsonl import JsonlRecorder, RecordFileError, read_records

__all__ = [
    "DEFAULT_LOW_CONFIDENCE_THRESHOLD",
    "AttachConfig",
    "ConfidenceCallbackHandler",
    "ConfidenceGate",
    "ConfidenceMissing",
    "ConfidenceReport",
    "ConfigError",
    "Exporter",
    "FieldConfidence",
    "JsonlRecorder",
    "LogprobsStatus",
    "LowConfidenceSpan",
    "MetricLabels",
    "OpenTelemetryMetricsExporter",
    "OpenTelemetryTracingExporter",
    "PrometheusExporter",
    "RecordFileError",
    "ResponseRecord",
    "RunStart",
    "Status",
    "TokenLogprob",
    "TokenLogprobs",
    "confidence_fallback",
    "default_exporters",
    "extract_token_logprobs",
    "field_confidence",
    "observe_confidence",
    "read_records",
    "render_heatmap",
    "render_html_report",
    "score_confidence",
    "summary_line",
    "token_offsets",
    "write_html_report",
]

# Zero-code activation: OBSERVABILITY_LANGCHAIN=1 attaches to every LangChain run on import.
_activate_from_env()
