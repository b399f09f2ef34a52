"""Confidence metrics from token logprobs for LangChain apps, exported to OpenTelemetry and Prometheus."""

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

__all__ = [
    "DEFAULT_LOW_CONFIDENCE_THRESHOLD",
    "ConfidenceCallbackHandler",
    "ConfidenceReport",
    "Exporter",
    "LogprobsStatus",
    "LowConfidenceSpan",
    "ResponseRecord",
    "RunStart",
    "Status",
    "TokenLogprob",
    "TokenLogprobs",
    "extract_token_logprobs",
    "score_confidence",
    "token_offsets",
]
