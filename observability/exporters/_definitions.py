"""The one table of metrics both metric systems build from: names, units, buckets, values.

Prometheus names are ``{prefix}_{name}`` (``llm_response_sequence_probability``); OpenTelemetry
names are ``{prefix}.{dotted name}`` (``llm.response.sequence_probability``) with the unit in
the instrument's unit field, not in the name, except where the GenAI semantic conventions define
the metric: time to first chunk is ``gen_ai.client.operation.time_to_first_chunk`` (no prefix).

One histogram per independent signal, with the same buckets in both systems and no negative
bound anywhere (OpenTelemetry histograms reject negative values; prometheus_client drops the
``_sum`` of a histogram with negative buckets and strict OpenMetrics parsers reject it). The
mean token logprob, perplexity and sequence probability are monotone transforms of one number
(``sequence_probability = exp(mean_logprob) = 1 / perplexity``), so only the sequence
probability is a histogram: a quantile of it gives the others' (the q-quantile of perplexity is
1 / the (1 − q)-quantile of sequence probability; of the mean logprob, its log). Means do not
carry over (the mean of 1/x is not 1/mean x): spans keep all three figures per response.

A value is observed only when it is a finite number; ``None`` (a figure that could not be
computed), NaN and ±inf are skipped so one bad value never reaches a histogram.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from observability.core.types import ResponseRecord

INSTRUMENTATION_SCOPE = "langchain-confidence"
"""The OpenTelemetry instrumentation scope (tracer and meter name) of our spans and instruments."""
DEFAULT_PREFIX = "llm"
_PREFIX_PATTERN = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

OPERATION_NAMES = {"chat": "chat", "llm": "text_completion"}
"""``gen_ai.operation.name`` per LangChain run kind (chat models, completion models)."""

SEQUENCE_PROBABILITY_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95,
                                0.975, 0.99, 0.995, 0.999, 1.0)
"""Fine near 1, where a capable model's answers crowd: 0.99 → 0.95 is mean logprob −0.01 → −0.05
(perplexity 1.01 → 1.05), the drift that matters. Down to 0.01 (perplexity 100, mean logprob
≈ −4.6) so the ranges of the former perplexity and mean-logprob histograms stay covered."""
MIN_TOKEN_PROBABILITY_BUCKETS = (1e-6, 1e-5, 1e-4, 0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8,
                                 0.9, 1.0)
"""The least likely token of a long answer often sits far below 0.01: log-spaced down to 1e-6."""
RATIO_BUCKETS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)
"""For shares in [0, 1]; ``le="0"`` counts responses with no doubtful token at all."""
MARGIN_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
ENTROPY_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
"""Nats over the returned alternatives: at most ln k (ln 20 ≈ 3.0)."""
TOKEN_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0)
TIME_TO_FIRST_CHUNK_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96,
                               81.92)
"""The explicit bucket boundaries the GenAI semantic conventions advise for
``gen_ai.client.operation.time_to_first_chunk`` (seconds)."""


@dataclass(frozen=True, slots=True)
class HistogramDefinition:
    """One histogram: ``name`` is the Prometheus name without prefix, ``otel_name`` the dotted one.

    ``unit`` is the OpenTelemetry (UCUM) unit; ``buckets`` are the bounds of both systems (none
    negative); ``value`` reads the observation from a record (None: nothing to observe);
    ``ok_only``: observe only responses that ended ``ok``, so partial answers of failed or
    cancelled runs do not skew the confidence distributions. ``semconv``: ``otel_name`` is a
    metric of the GenAI semantic conventions, used as is (no prefix), whose data points also
    carry the required ``gen_ai.operation.name``.
    """

    name: str
    otel_name: str
    unit: str
    description: str
    buckets: tuple[float, ...]
    value: Callable[[ResponseRecord], float | None]
    ok_only: bool = True
    semconv: bool = False

    def otel_instrument_name(self, prefix: str) -> str:
        """The OpenTelemetry instrument name under ``prefix`` (a conventions metric keeps its own)."""
        return self.otel_name if self.semconv else f"{prefix}.{self.otel_name}"


def _report_field(field_name: str) -> Callable[[ResponseRecord], float | None]:
    def read(record: ResponseRecord) -> float | None:
        report = record.report
        return None if report is None else getattr(report, field_name)

    read.__name__ = f"read_{field_name}"
    return read


def _tokens(record: ResponseRecord) -> float | None:
    return None if record.report is None else float(record.report.token_count)


HISTOGRAMS: tuple[HistogramDefinition, ...] = (
    HistogramDefinition("response_sequence_probability", "response.sequence_probability", "1",
                        "Per response: exp(mean token logprob), the geometric-mean token probability "
                        "(= 1 / perplexity).",
                        SEQUENCE_PROBABILITY_BUCKETS, _report_field("sequence_probability")),
    HistogramDefinition("response_min_token_probability", "response.min_token_probability", "1",
                        "Per response: probability of the least likely generated token.",
                        MIN_TOKEN_PROBABILITY_BUCKETS, _report_field("min_token_probability")),
    HistogramDefinition("response_low_confidence_ratio", "response.low_confidence_ratio", "1",
                        "Per response: share of tokens whose probability is below the low-confidence threshold.",
                        RATIO_BUCKETS, _report_field("low_confidence_ratio")),
    HistogramDefinition("response_mean_token_entropy", "response.mean_token_entropy", "{nat}",
                        "Per response: mean entropy (nats) over each token's returned alternatives.",
                        ENTROPY_BUCKETS, _report_field("mean_token_entropy")),
    HistogramDefinition("response_mean_top_margin", "response.mean_top_margin", "1",
                        "Per response: mean of p(best alternative) - p(second best).",
                        MARGIN_BUCKETS, _report_field("mean_top_margin")),
    HistogramDefinition("response_tokens", "response.tokens", "{token}",
                        "Per response: number of tokens scored.",
                        TOKEN_BUCKETS, _tokens),
    HistogramDefinition("time_to_first_token_seconds", "gen_ai.client.operation.time_to_first_chunk", "s",
                        "Streamed responses: seconds from the start of the model run to its first chunk.",
                        TIME_TO_FIRST_CHUNK_BUCKETS, lambda record: record.time_to_first_token_seconds,
                        ok_only=False, semconv=True),
)

FIELD_MIN_TOKEN_PROBABILITY = HistogramDefinition(
    "field_min_token_probability", "field.min_token_probability", "1",
    "Per leaf value of a JSON answer, at an allowlisted path: probability of the least likely token "
    "overlapping the value.",
    MIN_TOKEN_PROBABILITY_BUCKETS, lambda record: None)
"""The per-field histogram: the response min-token histogram's buckets, one extra label (``path``),
observed once per allowlisted field of a response that ended ``ok`` (``field_observations``). Not in
``HISTOGRAMS``: it exists only when the user allowlists field paths."""

CALIBRATED_PROBABILITY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
"""Tenths, as the reliability bins of ``evaluate`` and the feedback counter's buckets, finer near 1."""
CALIBRATED_PROBABILITY = HistogramDefinition(
    "response_calibrated_probability", "response.calibrated_probability", "1",
    "Per response, with a calibration map (calibration=): the probability that the answer is right, "
    "the map applied to one raw figure.",
    CALIBRATED_PROBABILITY_BUCKETS, lambda record: record.calibrated_probability)
"""Not in ``HISTOGRAMS``: it exists only when a handler has a calibration map, made on the first
calibrated response (``calibrated_observation``), for responses that ended ``ok``."""

RESPONSES_COUNTER_NAME = "responses"
"""Prometheus ``{prefix}_responses_total`` (the client adds ``_total``); OpenTelemetry ``{prefix}.responses``."""
RESPONSES_COUNTER_DESCRIPTION = "Model responses seen, by how the run ended and whether logprobs came back."


def finite(value: object) -> float | None:
    """``value`` as a float when it is a finite real number, else None (None, NaN, ±inf, bool, junk)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def observations(record: ResponseRecord) -> list[tuple[int, float]]:
    """``(index into HISTOGRAMS, value)`` for every histogram this record feeds."""
    found: list[tuple[int, float]] = []
    for index, definition in enumerate(HISTOGRAMS):
        if definition.ok_only and record.status != "ok":
            continue
        value = finite(definition.value(record))
        if value is not None:
            found.append((index, value))
    return found


def calibrated_observation(record: ResponseRecord) -> float | None:
    """The record's calibrated probability, when it ended ``ok`` and has a finite one."""
    return finite(record.calibrated_probability) if record.status == "ok" else None


def field_observations(record: ResponseRecord,
                       path_label: Callable[[str], str | None]) -> list[tuple[str, float]]:
    """``(path label, min token probability)`` for every field of this record whose path
    ``path_label`` allowlists (it returns None for the others). Only responses that ended ``ok``."""
    report = record.report
    if report is None or record.status != "ok" or not report.fields:
        return []
    found: list[tuple[str, float]] = []
    for field in report.fields:
        value = finite(field.min_token_probability)
        if value is None:
            continue
        label = path_label(field.path)
        if label is not None:
            found.append((label, value))
    return found


@functools.lru_cache(maxsize=1)
def package_version() -> str | None:
    """Our distribution's version, for the instrumentation scope; None when not installed."""
    try:
        from importlib.metadata import version

        return version("langchain-confidence")
    except Exception:  # not installed as a distribution (e.g. vendored)
        return None


def check_prefix(prefix: str) -> str:
    """The metric name prefix, validated: letters, digits and ``_``, not starting with a digit."""
    if not isinstance(prefix, str) or not _PREFIX_PATTERN.fullmatch(prefix):
        raise ValueError(f"prefix must match [a-zA-Z_][a-zA-Z0-9_]* (e.g. 'llm'), got {prefix!r}")
    return prefix


FEEDBACK_COUNTER_NAME = "feedback"
"""Prometheus ``{prefix}_feedback_total``; OpenTelemetry ``{prefix}.feedback``: verdicts joined to
responses by ``ConfidenceCallbackHandler.record_feedback``, by outcome and confidence bucket."""
FEEDBACK_COUNTER_DESCRIPTION = ("Verdicts on responses (record_feedback), by outcome (correct/incorrect) and the "
                                "response's sequence-probability bucket: accuracy per bucket is a live "
                                "reliability diagram.")


def confidence_bucket(record: ResponseRecord) -> str:
    """The record's sequence probability as one of ten equal-width buckets, by lower bound
    (``"0.0"`` … ``"0.9"``; 1.0 falls in ``"0.9"``), or ``"none"`` without a report."""
    value = finite(record.report.sequence_probability) if record.report is not None else None
    if value is None:
        return "none"
    return f"{min(max(int(value * 10), 0), 9) / 10:.1f}"
