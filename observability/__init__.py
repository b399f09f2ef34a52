"""Confidence metrics from token logprobs for LangChain apps, exported to OpenTelemetry and Prometheus.

The names an app uses are here; reports of recorded responses are in ``observability.report``,
exporter options in ``observability.exporters``, zero-code activation in
``observability.instrumentation``, test helpers in ``observability.testing``.
"""

from observability._attach import activate_from_env as _activate_from_env
from observability._attach import observe_confidence
from observability._config import ConfigError
from observability._extract import extract_token_logprobs
from observability._field_confidence import field_confidence
from observability._gate import ConfidenceMissing, confidence_fallback
from observability._handler import ConfidenceCallbackHandler
from observability._score import DEFAULT_LOW_CONFIDENCE_THRESHOLD, score_confidence
from observability._types import (
    ConfidenceReport,
    Exporter,
    FieldConfidence,
    LowConfidenceSpan,
    ResponseRecord,
    RunStart,
    TokenLogprob,
)
from observability.exporters import (
    OpenTelemetryMetricsExporter,
    OpenTelemetryTracingExporter,
    PrometheusExporter,
    default_exporters,
)
from observability.exporters._jsonl import JsonlRecorder

__all__ = [
    "DEFAULT_LOW_CONFIDENCE_THRESHOLD",
    "ConfidenceCallbackHandler",
    "ConfidenceMissing",
    "ConfidenceReport",
    "ConfigError",
    "Exporter",
    "FieldConfidence",
    "JsonlRecorder",
    "LowConfidenceSpan",
    "OpenTelemetryMetricsExporter",
    "OpenTelemetryTracingExporter",
    "PrometheusExporter",
    "ResponseRecord",
    "RunStart",
    "TokenLogprob",
    "confidence_fallback",
    "default_exporters",
    "extract_token_logprobs",
    "field_confidence",
    "observe_confidence",
    "score_confidence",
]

# Zero-code activation: OBSERVABILITY_LANGCHAIN=1 attaches to every LangChain run on import.
_activate_from_env()
