"""The scoring core against the formulas, computed apart (issue 29): every figure of the report,
spans included, for random chat payloads read by the general per-entry reader (``_extract._entry``)
and scored here with plain loops, one token at a time, as the module docstrings write them.

Tolerance: the core adds in token order, as these loops do, so on CPython 3.11 every figure is
equal bit for bit; ``close`` allows 1e-12 relative (and 1e-300 absolute) so that a change of
summation order (e.g. ``sum()``, compensated since CPython 3.12) stays within the documented bound
(docs/confidence.md, "How exact")."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from observability import ConfidenceReport, LowConfidenceSpan, TokenLogprob, extract_token_logprobs, score_confidence
from observability.core.extract import _entry
from tests.fuzzing import fuzz

TEXTS = ("대한민국의 수도는 서울입니다.", "As an AI, 😀 the answer is Canberra.", '{"age": 31, "city": "서울"}')
NOISE = 1e-4
FLOOR = math.log(2.2250738585072014e-308)


def reference(tokens: list[TokenLogprob], skipped: int, threshold: float) -> ConfidenceReport:
    """The report the module docstring of ``observability.core.score`` defines, one token at a time."""
    scored = [(i, min(t.logprob, 0.0)) for i, t in enumerate(tokens) if t.logprob <= NOISE]
    n = len(scored)
    if not n:
        return ConfidenceReport(0, skipped + len(tokens), threshold, *([None] * 10))  # type: ignore[arg-type]  # the empty report: every figure None
    total = 0.0
    for _, lp in scored:
        total += max(lp, FLOOR)
    entropies, negentropies, margins, masses = [], [], [], []
    for token in tokens:
        if not token.logprob <= NOISE:
            continue
        alternatives = sorted((min(lp, 0.0) for _, lp in token.top_logprobs if lp <= NOISE), reverse=True)
        if not alternatives:
            continue
        probabilities = [math.exp(lp) for lp in alternatives]
        z = 0.0
        for p in probabilities:
            z += p
        weighted = 0.0
        for p, lp in zip(probabilities, alternatives, strict=True):
            if p:
                weighted += p * lp
        entropy = max(math.log(z) - weighted / z, 0.0) if z > 0.0 else 0.0
        entropies.append(entropy)
        masses.append(min(z, 1.0))
        if len(alternatives) >= 2:
            negentropies.append(min(max(1.0 - entropy / math.log(len(alternatives)), 0.0), 1.0))
            margins.append(probabilities[0] - probabilities[1])
    low = [(i, lp) for i, lp in scored if lp < math.log(threshold)]
    mean = total / n
    return ConfidenceReport(
        token_count=n, skipped=skipped + len(tokens) - n, low_confidence_threshold=threshold,
        sequence_logprob=total, mean_logprob=mean, perplexity=math.exp(-mean), sequence_probability=math.exp(mean),
        min_token_probability=math.exp(min(lp for _, lp in scored)), low_confidence_ratio=len(low) / n,
        mean_token_entropy=_mean(entropies), mean_token_negentropy=_mean(negentropies),
        mean_top_margin=_mean(margins), top_k_mass=_mean(masses),
        low_confidence_spans=_spans(tokens, low))


def _mean(values: list[float]) -> float | None:
    total = 0.0
    for value in values:
        total += value
    return total / len(values) if values else None


def _spans(tokens: list[TokenLogprob], low: list[tuple[int, float]]) -> tuple[LowConfidenceSpan, ...]:
    """Runs of adjacent low tokens as character ranges: the text decoded whole (valid UTF-8 here),
    each byte mapped to the character holding it; a token covers the characters its bytes touch."""
    whole = b"".join(t.bytes or b"" for t in tokens)
    char_of_byte = []
    for index, char in enumerate(whole.decode()):
        char_of_byte += [index] * len(char.encode())
    position, ranges = 0, []
    for t in tokens:
        size = len(t.bytes or b"")
        ranges.append((char_of_byte[position], char_of_byte[position + size - 1] + 1))
        position += size
    runs: list[list[tuple[int, float]]] = []
    for i, lp in low:
        if runs and runs[-1][-1][0] == i - 1:
            runs[-1].append((i, lp))
        else:
            runs.append([(i, lp)])
    return tuple(LowConfidenceSpan(ranges[run[0][0]][0], ranges[run[-1][0]][1], math.exp(min(lp for _, lp in run)),
                                   len(run)) for run in runs)


logprobs = st.one_of(st.floats(-12.0, 0.0), st.floats(-12.0, -0.5),
                     st.sampled_from([0.0, -0.0, -math.inf, -800.0, math.log(0.5), 5e-5]))
odd = st.sampled_from([math.nan, 0.5, 2e-4, None, "x"])


@st.composite
def payloads(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A chat payload spelling one of ``TEXTS`` cut at random bytes (characters split across
    tokens), with 0-8 alternatives per token, sometimes out of order or holding a NaN, a
    positive value or -inf, and now and then an entry whose own logprob is NaN or positive."""
    raw = draw(st.sampled_from(TEXTS)).encode()
    cuts = sorted(draw(st.sets(st.integers(1, len(raw) - 1), max_size=len(raw) - 1)))
    entries = []
    for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        count = draw(st.sampled_from([0, 1, 2, 5, 5, 5, 8]))
        alternatives: list[Any] = sorted(draw(st.lists(logprobs, min_size=count, max_size=count)), reverse=True)
        if draw(st.integers(0, 9)) == 0:
            alternatives.reverse()
        if alternatives and draw(st.integers(0, 9)) == 0:
            alternatives[draw(st.integers(0, len(alternatives) - 1))] = draw(odd)
        entries.append({"token": raw[a:b].decode("utf-8", "replace"), "bytes": list(raw[a:b]),
                        "logprob": draw(logprobs),
                        "top_logprobs": [{"token": "x", "bytes": [120], "logprob": v} for v in alternatives]})
        if draw(st.integers(0, 19)) == 0:  # an entry extraction leaves out (its text stays valid UTF-8)
            entries.append({"token": "!", "bytes": [33], "logprob": draw(odd), "top_logprobs": []})
    return entries


def close(actual: Any, expected: Any) -> bool:
    if isinstance(expected, float) and isinstance(actual, float):
        return actual == expected or math.isclose(actual, expected, rel_tol=1e-12, abs_tol=1e-300)
    return bool(actual == expected)


@fuzz(300)
@given(payloads(), st.sampled_from([0.5, 0.9, 0.05, 1.0]))
def test_every_figure_equals_the_formulas_computed_apart(entries: list[dict[str, Any]], threshold: float) -> None:
    read = [_entry(entry) for entry in entries]
    tokens = [token for token in read if token is not None]
    expected = reference(tokens, len(read) - len(tokens), threshold)
    report = score_confidence(extract_token_logprobs({"content": entries, "refusal": None}),
                              low_confidence_threshold=threshold)
    for name in ConfidenceReport.__slots__:
        if name in ("low_confidence_spans", "fields"):  # fields: tests/test_field_confidence.py
            continue
        assert close(getattr(report, name), getattr(expected, name)), name
    assert len(report.low_confidence_spans) == len(expected.low_confidence_spans)
    for got, want in zip(report.low_confidence_spans, expected.low_confidence_spans, strict=True):
        assert (got.start, got.end, got.token_count) == (want.start, want.end, want.token_count)
        assert close(got.min_probability, want.min_probability)


def test_unsorted_alternatives_cost_only_their_token() -> None:
    """One token with alternatives out of order changes nothing for the others: the report equals
    the one of the same payload sent sorted (extraction sorts them best first)."""
    entries: list[dict[str, Any]] = [{"token": "a", "bytes": [97], "logprob": -0.1 * (i + 1),
                "top_logprobs": [{"token": "a", "logprob": -0.1 * (i + 1)}, {"token": "b", "logprob": -3.0}]}
               for i in range(50)]
    unsorted = [dict(entry) for entry in entries]
    unsorted[7] = {**entries[7], "top_logprobs": entries[7]["top_logprobs"][::-1]}
    tokens = extract_token_logprobs(unsorted)
    assert repr(score_confidence(tokens)) == repr(score_confidence(extract_token_logprobs(entries)))
    assert tokens._tokens is None  # no token object was made for the other 49


@pytest.mark.parametrize("lp", [math.nan, 0.5])
def test_a_hand_made_token_with_a_nan_or_positive_logprob_is_kept_and_skipped(lp: float) -> None:
    tokens = [TokenLogprob("a", b"a", -0.5), TokenLogprob("b", b"b", lp), TokenLogprob("c", b"c", -2.0)]
    report = score_confidence(tokens)
    assert (report.token_count, report.skipped) == (2, 1)
    assert report.low_confidence_spans == (LowConfidenceSpan(2, 3, math.exp(-2.0), 1),)


def five_alternatives(top: list[float], n: int, chosen: int = 0) -> list[dict[str, Any]]:
    """``n`` entries whose 5 alternatives have the logprobs ``top`` (best first), the token the
    ``chosen``-th of them."""
    return [{"token": "ab"[i % 2], "bytes": [97 + i % 2], "logprob": top[chosen],
             "top_logprobs": [{"token": "x", "logprob": lp} for lp in top]} for i in range(n)]


def same_figures(entries: list[dict[str, Any]]) -> None:
    read = [_entry(entry) for entry in entries]
    tokens = [token for token in read if token is not None]
    expected = reference(tokens, len(read) - len(tokens), 0.5)
    report = score_confidence(extract_token_logprobs(entries))
    for name in ConfidenceReport.__slots__:
        assert close(getattr(report, name), getattr(expected, name)), name


@pytest.mark.parametrize(("top", "why"), [
    ([-1e-12, -28.0, -29.0, -30.0, -31.0], "entropy near 0: the per-token clamps act, the two sums cancel"),
    ([0.0, -700.0, -701.0, -702.0, -703.0], "entropy 0 to the last bit"),
    ([-1.6094379124341003] * 5, "uniform: negentropy near 0, entropy at ln 5"),
    ([-1.6094379124341, -1.6094379124342, -1.6094379124343, -1.6094379124344, -1.6094379124345], "nearly uniform"),
    ([-40.0, -40.5, -41.0, -41.5, -42.0], "z about 1e-17: the product of z folds every 16 tokens"),
    ([-700.0, -701.0, -702.0, -703.0, -704.0], "z below 1e-300: folds at every token"),
])
def test_the_one_log_entropy_equals_the_per_token_sums_at_the_edges(top: list[float], why: str) -> None:
    """``read_columns`` sums the entropy of 5-alternative tokens as ln(prod z) - sum(w / z) and the
    negentropy from it (issue 29); where that could leave 1e-12 relative it reads per token."""
    for n in (1, 3, 1_000):
        same_figures(five_alternatives(top, n))


@fuzz(100)
@given(st.lists(st.lists(st.floats(-60.0, 0.0), min_size=5, max_size=5), min_size=1, max_size=3_000),
       st.integers(0, 4))
def test_the_one_log_entropy_equals_the_per_token_sums_on_long_answers(tops: list[list[float]], chosen: int) -> None:
    entries = [entry for top in tops for entry in five_alternatives(sorted(top, reverse=True), 1, chosen)]
    same_figures(entries)


@pytest.mark.parametrize("piece", ["", {}, "ab", None, 5, [300], b"", [0x80]])
def test_a_token_whose_bytes_are_not_a_list_of_ints_is_located_as_the_general_reader_reads_it(piece: Any) -> None:
    """The columns' one-join of the pieces takes JSON's lists of ints only: an empty string (or
    dict) passes for no bytes there, where the reader takes the token's text, and a lone
    continuation byte sends the text down the token-by-token decoding. Found by test_fuzz: a
    TypeError inside on_llm_end for ``{"bytes": ""}`` beside ``{"bytes": [0x80]}``."""
    entries: list[dict[str, Any]] = [
        {"token": "서울", "bytes": list("서울".encode()), "logprob": -0.1, "top_logprobs": []},
        {"token": "ab", "bytes": piece, "logprob": -0.2, "top_logprobs": []},
        {"token": "\ufffd", "bytes": [0x80], "logprob": -0.3, "top_logprobs": []},
        {"token": " 수도", "bytes": list(" 수도".encode()), "logprob": -5.0, "top_logprobs": []},
    ]
    general = [token for token in map(_entry, entries) if token is not None]
    got = score_confidence(extract_token_logprobs(entries))
    want = score_confidence(general)
    assert repr(got) == repr(want)
    assert [(s.start, s.end) for s in got.low_confidence_spans] == [(s.start, s.end) for s in want.low_confidence_spans]
