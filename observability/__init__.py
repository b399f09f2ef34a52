"""Confidence metrics from token logprobs for LangChain apps, exported to OpenTelemetry and Prometheus.

The names an app uses are here. Exporters and their options are in ``observability.exporters``,
reports of recorded responses in ``observability.report``, zero-code activation in
``observability.instrumentation``, test helpers in ``observability.testing``. Everything else
(``core``, ``langchain``, ``attach``, ...) is internal; docs/development.md maps the rooms.
"""

from __future__ import annotations

import warnings
from typing import Any

from observability.attach.activation import activate_from_env as _activate_from_env
from observability.attach.activation import observe_confidence
from observability.attach.config import ConfigError
from observability.core.extract import extract_token_logprobs
from observability.core.fields import field_confidence
from observability.core.score import DEFAULT_LOW_CONFIDENCE_THRESHOLD, score_confidence
from observability.core.types import (
    ConfidenceReport,
    FieldConfidence,
    LowConfidenceSpan,
    ResponseRecord,
    RunStart,
    TokenLogprob,
)
from observability.langchain.gate import ConfidenceMissing, confidence_fallback
from observability.langchain.handler import ConfidenceCallbackHandler

__all__ = [
    "DEFAULT_LOW_CONFIDENCE_THRESHOLD",
    "ConfidenceCallbackHandler",
    "ConfidenceMissing",
    "ConfidenceReport",
    "ConfigError",
    "FieldConfidence",
    "LowConfidenceSpan",
    "ResponseRecord",
    "RunStart",
    "TokenLogprob",
    "confidence_fallback",
    "extract_token_logprobs",
    "field_confidence",
    "observe_confidence",
    "score_confidence",
]

# Names that moved to ``observability.exporters`` in 0.2: still importable from here, with a
# DeprecationWarning, until the release after 0.2 (docs/upgrading.md).
_MOVED_TO_EXPORTERS = ("Exporter", "JsonlRecorder", "OpenTelemetryMetricsExporter", "OpenTelemetryTracingExporter",
                       "PrometheusExporter", "default_exporters")


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_EXPORTERS:
        warnings.warn(f"import {name} from observability.exporters; the top-level name goes away in the "
                      "release after 0.2", DeprecationWarning, stacklevel=2)
        import observability.exporters

        return getattr(observability.exporters, name)
    raise AttributeError(f"module 'observability' has no attribute {name!r}")


# Zero-code activation: OBSERVABILITY_LANGCHAIN=1 attaches to every LangChain run on import.
_activate_from_env()
