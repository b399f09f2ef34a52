"""Confidence metrics from token logprobs for LangChain apps, exported to OpenTelemetry and Prometheus."""

from observability._attach import activate_from_env as _activate_from_env
from observability._attach import observe_confidence
from observability._config import AttachConfig, ConfigError
from observability._extract import extract_token_logprobs
from observability._handler import ConfidenceCallbackHandler
from observability._score import DEFAULT_LOW_CONFIDENCE_THRESHOLD, score_confidence
from observability._text import token_offsets
from observability._types import (
    ConfidenceReport,
    Exporter,
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

__all__ = [
    "DEFAULT_LOW_CONFIDENCE_THRESHOLD",
    "AttachConfig",
    "ConfidenceCallbackHandler",
    "ConfidenceReport",
    "ConfigError",
    "Exporter",
    "LogprobsStatus",
    "LowConfidenceSpan",
    "MetricLabels",
    "OpenTelemetryMetricsExporter",
    "OpenTelemetryTracingExporter",
    "PrometheusExporter",
    "ResponseRecord",
    "RunStart",
    "Status",
    "TokenLogprob",
    "TokenLogprobs",
    "default_exporters",
    "extract_token_logprobs",
    "observe_confidence",
    "score_confidence",
    "token_offsets",
]

# Zero-code activation: OBSERVABILITY_LANGCHAIN=1 attaches to every LangChain run on import.
_activate_from_env()
