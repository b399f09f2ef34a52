"""``TokenLogprob`` list -> ``ConfidenceReport``. Pure arithmetic, standard library only.

Formulas (natural logs; ``lp`` a token's logprob, ``n`` the scored tokens):
    sequence_logprob      = sum(lp)
    mean_logprob          = sequence_logprob / n
    perplexity            = exp(-mean_logprob)
    sequence_probability  = exp(mean_logprob)          (length-normalised; = 1 / perplexity)
    min_token_probability = min(exp(lp))
    low_confidence_ratio  = share of tokens with exp(lp) < threshold
For a token with k returned alternatives of probabilities p_i (q_i = p_i / sum p):
    entropy    H = -sum(q_i ln q_i)               (nats, over the renormalised alternatives)
    negentropy   = 1 - H / ln k                   (k >= 2 only; 1 = all mass on one alternative)
    top margin   = p_1 - p_2                      (k >= 2 only; the two most likely alternatives)
    top-k mass   = sum(p_i), capped at 1          (how much the truncation to k leaves visible)
and the report holds each one's mean over the tokens where it is defined.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import chain
from typing import NamedTuple

from observability.core.extract import LOGPROB_FLOOR, POSITIVE_NOISE
from observability.core.fields import fields_in, may_hold_json
from observability.core.text import token_offsets
from observability.core.types import (
    ConfidenceReport,
    FieldConfidence,
    LowConfidenceSpan,
    TokenLogprob,
    TokenLogprobs,
)

__all__ = ["DEFAULT_LOW_CONFIDENCE_THRESHOLD", "LOGPROB_FLOOR", "check_threshold", "score_confidence"]

DEFAULT_LOW_CONFIDENCE_THRESHOLD = 0.5
"""A token is low-confidence when the model gave it less than even odds: some other token
was, in total, more likely than the one it produced."""

_exp = math.exp
_log = math.log
_LOG_K = [0.0, 0.0, *(math.log(k) for k in range(2, 33))]  # ln k for the usual alternative counts


def score_confidence(
    tokens: Sequence[TokenLogprob],
    *,
    low_confidence_threshold: float = DEFAULT_LOW_CONFIDENCE_THRESHOLD,
) -> ConfidenceReport:
    """Score one response's tokens. See the module docstring for the formulas.

    ``fields`` holds one ``FieldConfidence`` per leaf value when the answer is JSON (see
    ``observability.core.fields``), else ``()``.

    ``skipped`` adds the malformed entries ``extract_token_logprobs`` left out (its
    ``skipped`` attribute) to tokens skipped here (NaN or clearly positive logprobs).
    """
    threshold = check_threshold(low_confidence_threshold)
    log_threshold = _log(threshold)
    if not isinstance(tokens, TokenLogprobs):  # one set of columns for the loop, the text and the fields
        tokens = TokenLogprobs(tokens, int(getattr(tokens, "skipped", 0) or 0))
    columns = tokens.columns
    sums = _sums(columns.logprobs, columns.alternatives, columns.counts, log_threshold)
    if sums is None:  # some token's alternatives are not best first, or hold NaN or positive values
        alternatives = [_best_first(token.top_logprobs) for token in tokens]
        sums = _sums(columns.logprobs, list(chain.from_iterable(alternatives)), list(map(len, alternatives)),
                     log_threshold)
        assert sums is not None
    skipped = sums.skipped + tokens.skipped
    low = sums.low
    # Character ranges are needed for low-confidence spans and for the fields of a JSON answer;
    # a plain-text answer with no low-confidence token skips them (``may_hold_json`` is cheap).
    spans: tuple[LowConfidenceSpan, ...] = ()
    fields: tuple[FieldConfidence, ...] = ()
    if low or (sums.n and may_hold_json(tokens)):
        text, offsets = token_offsets(tokens)
        if low:
            spans = _spans(low, offsets)
        fields = fields_in(tokens, text, offsets)
    return _report(threshold, skipped, sums, spans, fields)


class _Sums(NamedTuple):
    """What one pass over the tokens adds up; negentropy and margin count the same tokens."""

    skipped: int
    n: int
    total: float
    min_lp: float
    low: list[tuple[int, float]]  # (index, logprob) of each low-confidence token
    entropy_sum: float
    entropy_n: int
    negentropy_sum: float
    negentropy_n: int
    margin_sum: float
    mass_sum: float


def _sums(logprobs: Sequence[float], alternatives: Sequence[float], counts: Sequence[int],
          log_threshold: float) -> _Sums | None:
    """One pass over the tokens (``alternatives`` and ``counts`` as in ``TokenColumns``). None when
    a token's alternatives are not best first, or hold NaN or a positive value: the caller sorts
    them out and calls again.

    This runs once per token of every response (see benchmarks/RESULTS.md), so everything is
    inline: ``x = 0.0 if x > 0.0 else x`` is min(x, 0.0) without the call (and so on for each
    clamp: the same result as min/max, NaN included)."""
    exp, log, noise, floor, log_k, tabled = _exp, _log, POSITIVE_NOISE, LOGPROB_FLOOR, _LOG_K, len(_LOG_K)
    skipped = 0
    total = min_lp = 0.0
    low: list[tuple[int, float]] = []
    entropy_sum = negentropy_sum = margin_sum = mass_sum = 0.0
    entropy_n = negentropy_n = 0
    end = 0
    for index, (lp, k) in enumerate(zip(logprobs, counts, strict=True)):
        start = end
        end += k
        if not lp <= noise:  # NaN or a real positive value: malformed
            skipped += 1
            continue
        if lp > 0.0:
            lp = 0.0
        total += lp if lp > floor else floor
        if lp < min_lp:
            min_lp = lp
        if lp < log_threshold:
            low.append((index, lp))
        if not k:
            continue
        alts = alternatives[start:end]
        # z = sum p_i, weighted = sum p_i ln p_i over the alternatives (p_i = 0 adds nothing:
        # its ln is -inf), checking on the way that they come best first, none above 0.
        z = weighted = previous = 0.0
        for alp in alts:
            if not alp <= previous:
                return None
            previous = alp
            p = exp(alp)
            z += p
            if p:
                weighted += p * alp
        # H = -sum (p/z) ln(p/z) = ln z - (sum p ln p) / z
        entropy = log(z) - weighted / z if z > 0.0 else 0.0
        if entropy < 0.0:
            entropy = 0.0
        entropy_sum += entropy
        entropy_n += 1
        mass_sum += 1.0 if z > 1.0 else z
        if k >= 2:
            negentropy = 1.0 - entropy / (log_k[k] if k < tabled else log(k))
            negentropy_sum += 0.0 if negentropy < 0.0 else 1.0 if negentropy > 1.0 else negentropy
            negentropy_n += 1
            margin_sum += exp(alts[0]) - exp(alts[1])  # best first: the two most likely
    return _Sums(skipped, len(logprobs) - skipped, total, min_lp, low, entropy_sum, entropy_n,
                 negentropy_sum, negentropy_n, margin_sum, mass_sum)


def _best_first(alternatives: Sequence[tuple[str | None, float]]) -> list[float]:
    """The logprobs of a token's alternatives as ``_sums`` can read them: NaN and clearly positive
    ones left out, float noise above 0 read as 0, best first (ties in the order given, as
    extraction sorts them)."""
    return sorted((0.0 if lp > 0.0 else lp for _, lp in alternatives if lp <= POSITIVE_NOISE), reverse=True)


def _report(threshold: float, skipped: int, sums: _Sums, spans: tuple[LowConfidenceSpan, ...],
            fields: tuple[FieldConfidence, ...]) -> ConfidenceReport:
    """The report from the sums of one pass (see the module docstring)."""
    n = sums.n
    if n == 0:
        return ConfidenceReport(
            token_count=0, skipped=skipped, low_confidence_threshold=threshold,
            sequence_logprob=None, mean_logprob=None, perplexity=None, sequence_probability=None,
            min_token_probability=None, low_confidence_ratio=None, mean_token_entropy=None,
            mean_token_negentropy=None, mean_top_margin=None, top_k_mass=None,
        )
    mean = sums.total / n
    entropy_n, negentropy_n = sums.entropy_n, sums.negentropy_n
    return ConfidenceReport(
        token_count=n,
        skipped=skipped,
        low_confidence_threshold=threshold,
        sequence_logprob=sums.total,
        mean_logprob=mean,
        perplexity=_exp(-mean),
        sequence_probability=_exp(mean),
        min_token_probability=_exp(sums.min_lp),
        low_confidence_ratio=len(sums.low) / n,
        mean_token_entropy=sums.entropy_sum / entropy_n if entropy_n else None,
        mean_token_negentropy=sums.negentropy_sum / negentropy_n if negentropy_n else None,
        mean_top_margin=sums.margin_sum / negentropy_n if negentropy_n else None,
        top_k_mass=sums.mass_sum / entropy_n if entropy_n else None,
        low_confidence_spans=spans,
        fields=fields,
    )


def check_threshold(value: object) -> float:
    """Validate a low-confidence threshold: a probability in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(
            f"low_confidence_threshold must be a probability in (0, 1], got {value!r}; "
            f"the default is {DEFAULT_LOW_CONFIDENCE_THRESHOLD}"
        )
    return float(value)


def _spans(low: list[tuple[int, float]], offsets: list[tuple[int, int]]) -> tuple[LowConfidenceSpan, ...]:
    """Merge adjacent low-confidence tokens, given as (index, logprob), into character ranges of
    the response text (``offsets``: each token's range, from ``token_offsets``)."""
    spans: list[LowConfidenceSpan] = []
    run_start = run_end = low[0][0]
    lowest = low[0][1]
    for index, lp in [*low[1:], (-1, 0.0)]:
        if index == run_end + 1:
            run_end = index
            if lp < lowest:  # what min() keeps
                lowest = lp
            continue
        end = offsets[run_end][1] if run_start == run_end else max(
            offsets[i][1] for i in range(run_start, run_end + 1))
        spans.append(LowConfidenceSpan(
            start=offsets[run_start][0],
            end=end,
            min_probability=_exp(min(lowest, 0.0)),
            token_count=run_end - run_start + 1,
        ))
        run_start = run_end = index
        lowest = lp
    return tuple(spans)
