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
from collections import deque
from collections.abc import Sequence
from itertools import compress, count, repeat
from operator import lt, sub
from typing import NamedTuple

from observability.core.extract import LOGPROB_FLOOR, extract_response
from observability.core.fields import fields_in
from observability.core.text import Located, json_start, locate
from observability.core.types import (
    ConfidenceReport,
    FieldConfidence,
    LowConfidenceSpan,
    TokenLogprob,
    TokenLogprobs,
    TokenSums,
)

__all__ = ["DEFAULT_LOW_CONFIDENCE_THRESHOLD", "LOGPROB_FLOOR", "ScoredResponse", "check_threshold", "score_confidence",
           "score_response"]

DEFAULT_LOW_CONFIDENCE_THRESHOLD = 0.5
"""A token is low-confidence when the model gave it less than even odds: some other token
was, in total, more likely than the one it produced."""

_exp = math.exp
_log = math.log


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

    The walk is one way: the columns (read once, with the per-token sums, by ``extract``), then
    the low-confidence tokens, then the characters (``text``: the text and the spans' edges only
    when there are low-confidence tokens or the answer may be JSON, every token's range only when
    it holds JSON), then the fields from those (``fields``, which locates nothing again).
    """
    threshold = check_threshold(low_confidence_threshold)
    if not isinstance(tokens, TokenLogprobs):
        tokens = TokenLogprobs(tokens, int(getattr(tokens, "skipped", 0) or 0))
    return _scored(tokens, threshold).report


class ScoredResponse(NamedTuple):
    """One response read and scored: its ``tokens`` and their ``report``, and ``located``, where
    its characters are, if scoring needed them (``text`` makes them otherwise)."""

    tokens: TokenLogprobs
    report: ConfidenceReport
    located: Located | None

    @property
    def text(self) -> str:
        """The text the tokens spell (see ``observability.core.text``)."""
        return (self.located or Located(self.tokens.columns)).text


def score_response(end_payload: object, streamed: Sequence[object], *,
                   low_confidence_threshold: float = DEFAULT_LOW_CONFIDENCE_THRESHOLD) -> ScoredResponse | None:
    """What the handler calls, once per response: read its logprobs (``extract.extract_response``:
    ``end_payload`` from the end event, ``streamed`` each chunk's) and score them. None when
    neither holds any."""
    tokens = extract_response(end_payload, streamed)
    return None if tokens is None else _scored(tokens, check_threshold(low_confidence_threshold))


def _scored(tokens: TokenLogprobs, threshold: float) -> ScoredResponse:
    columns = tokens.columns
    sums = columns.sums
    logprobs = columns.logprobs
    # The low-confidence tokens' indices, in C (NaN and positive logprobs are never below).
    low = list(compress(count(), map(lt, logprobs, repeat(_log(threshold))))) if sums.n else []
    located = locate(columns, low=bool(low)) if sums.n else None
    # Every token's range only for an answer holding JSON (made first, the spans' edges read
    # them); then the fields, from these (the walk enters ``text`` once, then ``fields`` once).
    start = None if located is None else json_start(located.text)
    ranges = None if located is None or start is None else located.ranges()
    spans = _spans(low, logprobs, located) if low and located is not None else ()
    fields = () if located is None or ranges is None or start is None else fields_in(
        columns, located.text, start, *ranges)
    return ScoredResponse(tokens, _report(threshold, sums.skipped + tokens.skipped, sums, len(low), spans, fields),
                          located)


def _report(threshold: float, skipped: int, sums: TokenSums, low: int, spans: tuple[LowConfidenceSpan, ...],
            fields: tuple[FieldConfidence, ...]) -> ConfidenceReport:
    """The report from the sums of the reading pass (see the module docstring)."""
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
        min_token_probability=_exp(sums.min_logprob),
        low_confidence_ratio=low / n,
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


def _spans(low: list[int], logprobs: Sequence[float], located: Located) -> tuple[LowConfidenceSpan, ...]:
    """Merge adjacent low-confidence tokens (their indices, increasing) into character ranges of
    the response text; only the tokens at a span's edges are located."""
    firsts: list[int] = []
    lasts: list[int] = []
    lowest: list[float] = []
    run_start = run_end = low[0]
    least = logprobs[run_start]
    for index in low[1:]:
        if index == run_end + 1:
            run_end = index
            lp = logprobs[index]
            if lp < least:  # what min() keeps
                least = lp
            continue
        firsts.append(run_start)
        lasts.append(run_end)
        lowest.append(least)
        run_start = run_end = index
        least = logprobs[index]
    firsts.append(run_start)
    lasts.append(run_end)
    lowest.append(least)
    starts, ends = located.edges(firsts, lasts)
    # A frozen dataclass's __init__ costs a microsecond or two a span; filling the slots directly,
    # a column at a time in C, gives the same objects (``LowConfidenceSpan`` has no __post_init__
    # and no validation). A low token's logprob is below ln(threshold) <= 0: its exp needs no clamp.
    spans = list(map(_new_span, repeat(LowConfidenceSpan, len(firsts))))
    _drain(map(_set_start, spans, starts), 0)
    _drain(map(_set_end, spans, ends), 0)
    _drain(map(_set_min_probability, spans, map(_exp, lowest)), 0)
    _drain(map(_set_token_count, spans, map(sub, lasts, map(_less_one, firsts))), 0)
    return tuple(spans)


_drain = deque  # deque(iterator, 0) runs the iterator, keeping nothing
_less_one = (-1).__add__
_new_span = object.__new__
_slots = vars(LowConfidenceSpan)  # the slots' descriptors
_set_start, _set_end = _slots["start"].__set__, _slots["end"].__set__
_set_min_probability, _set_token_count = _slots["min_probability"].__set__, _slots["token_count"].__set__
