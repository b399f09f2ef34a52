"""The one table of metrics both metric systems build from: names, units, buckets, values.

Prometheus names are ``{prefix}_{name}`` (``llm_response_sequence_probability``); OpenTelemetry
names are ``{prefix}.{dotted name}`` (``llm.response.sequence_probability``) with the unit in
the instrument's unit field, not in the name. Buckets are chosen for each quantity, not the
latency defaults: finer where the values crowd (probabilities near 1, logprobs near 0).

A value is observed only when it is a finite number; ``None`` (a figure that could not be
computed), NaN and ±inf are skipped so one bad value never reaches a histogram.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from observability._types import ResponseRecord

INSTRUMENTATION_SCOPE = "langchain-confidence"
"""The OpenTelemetry instrumentation scope (tracer and meter name) of our spans and instruments."""
DEFAULT_PREFIX = "llm"
_PREFIX_PATTERN = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

PROBABILITY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99, 1.0)
"""For probabilities that usually sit near 1 (sequence probability): fine steps above 0.8."""
LOW_PROBABILITY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""For the least likely token of a response, which is often far below 0.1."""
RATIO_BUCKETS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)
"""For shares in [0, 1]; ``le="0"`` counts responses with no doubtful token at all."""
MARGIN_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
LOGPROB_BUCKETS = (-5.0, -3.0, -2.0, -1.5, -1.0, -0.75, -0.5, -0.3, -0.2, -0.1, -0.05, -0.01, 0.0)
"""Mean logprob is ≤ 0; -0.01 ≈ probability 0.99 per token, -1 ≈ 0.37, -5 ≈ 0.007."""
PERPLEXITY_BUCKETS = (1.0, 1.01, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0)
"""Perplexity is ≥ 1 (= 1 / sequence probability)."""
ENTROPY_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
"""Nats over the returned alternatives: at most ln k (ln 20 ≈ 3.0)."""
TOKEN_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0)
TIME_TO_FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0)


@dataclass(frozen=True, slots=True)
class HistogramDefinition:
    """One histogram: ``name`` is the Prometheus name without prefix, ``otel_name`` the dotted one.

    ``unit`` is the OpenTelemetry (UCUM) unit; ``value`` reads the observation from a record
    (None: nothing to observe); ``ok_only``: observe only responses that ended ``ok``, so partial
    answers of failed or cancelled runs do not skew the confidence distributions.
    """

    name: str
    otel_name: str
    unit: str
    description: str
    buckets: tuple[float, ...]
    value: Callable[[ResponseRecord], float | None]
    ok_only: bool = True
    otel_negated: bool = False
    """OpenTelemetry histograms take no negative values (the SDK drops them), so a quantity ≤ 0 is
    recorded there negated, under its own name (``mean_logprob`` → ``mean_negative_logprob``)."""

    @property
    def otel_buckets(self) -> tuple[float, ...]:
        """Bucket bounds for the OpenTelemetry instrument (negated and re-sorted when ``otel_negated``)."""
        return tuple(sorted(-b + 0.0 for b in self.buckets)) if self.otel_negated else self.buckets


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
                        "Per response: exp(mean token logprob), the geometric-mean token probability.",
                        PROBABILITY_BUCKETS, _report_field("sequence_probability")),
    HistogramDefinition("response_mean_logprob", "response.mean_negative_logprob", "{nat}",
                        "Per response: mean natural-log probability of the generated tokens (≤ 0). "
                        "OpenTelemetry: its negation, -mean logprob = ln(perplexity) (≥ 0).",
                        LOGPROB_BUCKETS, _report_field("mean_logprob"), otel_negated=True),
    HistogramDefinition("response_perplexity", "response.perplexity", "1",
                        "Per response: exp(-mean token logprob) (≥ 1).",
                        PERPLEXITY_BUCKETS, _report_field("perplexity")),
    HistogramDefinition("response_min_token_probability", "response.min_token_probability", "1",
                        "Per response: probability of the least likely generated token.",
                        LOW_PROBABILITY_BUCKETS, _report_field("min_token_probability")),
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
    HistogramDefinition("time_to_first_token_seconds", "time_to_first_token", "s",
                        "Streamed responses: seconds from the start of the run to the first token.",
                        TIME_TO_FIRST_TOKEN_BUCKETS, lambda record: record.time_to_first_token_seconds,
                        ok_only=False),
)

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
