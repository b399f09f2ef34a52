"""score_confidence: hand-computed cases, edge cases, and properties of the arithmetic."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from observability import DEFAULT_LOW_CONFIDENCE_THRESHOLD, TokenLogprob, extract_token_logprobs, score_confidence
from observability.report import token_offsets
from tests.fuzzing import fuzz
from tests.test_core_extract import seed_english_stream, seed_korean_payload

Alt = tuple[str | None, float]


def tok(logprob: float, *alts: float, text: str = "x") -> TokenLogprob:
    return TokenLogprob(token=text, bytes=None, logprob=logprob,
                        top_logprobs=tuple((f"a{i}", lp) for i, lp in enumerate(alts)))


def test_hand_computed_two_tokens() -> None:
    p1, p2 = 0.8, 0.25
    tokens = [tok(math.log(p1), math.log(0.8), math.log(0.2)),
              tok(math.log(p2), math.log(0.5), math.log(0.25), math.log(0.25))]
    r = score_confidence(tokens)
    assert r.token_count == 2 and r.skipped == 0
    assert r.sequence_logprob == pytest.approx(math.log(0.8) + math.log(0.25))
    assert r.mean_logprob == pytest.approx((math.log(0.8) + math.log(0.25)) / 2)
    assert r.sequence_probability == pytest.approx(math.sqrt(0.8 * 0.25))  # geometric mean
    assert r.perplexity == pytest.approx(1 / math.sqrt(0.8 * 0.25))
    assert r.min_token_probability == pytest.approx(0.25)
    assert r.low_confidence_ratio == pytest.approx(0.5)
    h1 = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    h2 = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert r.mean_token_entropy == pytest.approx((h1 + h2) / 2)
    assert r.mean_token_negentropy == pytest.approx(((1 - h1 / math.log(2)) + (1 - h2 / math.log(3))) / 2)
    assert r.mean_top_margin == pytest.approx(((0.8 - 0.2) + (0.5 - 0.25)) / 2)
    assert r.top_k_mass == pytest.approx(1.0)


def test_entropy_renormalises_truncated_alternatives_and_mass_shows_the_truncation() -> None:
    r = score_confidence([tok(math.log(0.3), math.log(0.3), math.log(0.3))])
    assert r.mean_token_entropy == pytest.approx(math.log(2))  # two equal alternatives after renormalising
    assert r.mean_token_negentropy == pytest.approx(0.0, abs=1e-12)
    assert r.top_k_mass == pytest.approx(0.6)
    assert r.mean_top_margin == pytest.approx(0.0)


def test_no_tokens_gives_none_never_nan() -> None:
    r = score_confidence([])
    assert r.token_count == 0
    for name in ("sequence_logprob", "mean_logprob", "perplexity", "sequence_probability",
                 "min_token_probability", "low_confidence_ratio", "mean_token_entropy",
                 "mean_token_negentropy", "mean_top_margin", "top_k_mass"):
        assert getattr(r, name) is None, name


def test_no_alternatives_leaves_alternative_figures_none() -> None:
    r = score_confidence([tok(-0.1), tok(-0.2)])
    assert r.mean_token_entropy is None and r.mean_top_margin is None and r.top_k_mass is None
    assert r.mean_token_negentropy is None
    assert r.sequence_logprob == pytest.approx(-0.3)


def test_one_alternative_has_entropy_zero_but_no_margin_or_negentropy() -> None:
    r = score_confidence([tok(-0.1, -0.1)])
    assert r.mean_token_entropy == 0.0
    assert r.mean_top_margin is None and r.mean_token_negentropy is None


def test_minus_infinity_is_probability_zero_and_keeps_everything_finite() -> None:
    r = score_confidence([tok(-math.inf, -math.inf, -0.5), tok(-0.1)])
    assert r.min_token_probability == 0.0
    assert r.low_confidence_ratio == 0.5
    for value in (r.sequence_logprob, r.mean_logprob, r.perplexity, r.sequence_probability,
                  r.mean_token_entropy, r.mean_top_margin):
        assert value is not None and math.isfinite(value)


def test_noise_and_nan_tokens() -> None:
    r = score_confidence([tok(2e-7), tok(float("nan")), tok(0.5), tok(-1.0)])
    assert r.token_count == 2 and r.skipped == 2
    assert r.sequence_logprob == pytest.approx(-1.0)


def test_skipped_adds_what_extraction_left_out() -> None:
    tokens = extract_token_logprobs([{"token": "a", "logprob": -0.1}, {"token": "b"}, None])
    assert score_confidence(tokens).skipped == 2


@pytest.mark.parametrize("threshold", [0, -0.1, 1.5, float("nan"), "0.5", None, True])
def test_bad_threshold_is_a_clear_error(threshold: object) -> None:
    with pytest.raises(ValueError, match="low_confidence_threshold must be a probability in"):
        score_confidence([tok(-0.1)], low_confidence_threshold=threshold)  # type: ignore[arg-type]


def test_threshold_decides_low_confidence() -> None:
    tokens = [tok(math.log(0.45)), tok(math.log(0.55)), tok(math.log(0.95))]
    assert score_confidence(tokens).low_confidence_ratio == pytest.approx(1 / 3)
    assert DEFAULT_LOW_CONFIDENCE_THRESHOLD == 0.5
    assert score_confidence(tokens, low_confidence_threshold=0.9).low_confidence_ratio == pytest.approx(2 / 3)
    assert score_confidence(tokens, low_confidence_threshold=1.0).low_confidence_ratio == 1.0


def test_korean_seed_spans_land_on_whole_characters() -> None:
    tokens = extract_token_logprobs(seed_korean_payload())
    text, offsets = token_offsets(tokens)
    assert text == "대한민국의 수도는 서울입니다."
    # 민 = tokens 2+3 (bytes EB AF | BC); 국 = tokens 4+5; 울 = tokens 11+12
    assert offsets[2] == offsets[3] == (2, 3)
    assert offsets[4] == offsets[5] == (3, 4)
    assert offsets[11] == offsets[12] == (11, 12)
    # Tokens with logprob < ln(0.9999999) ≈ -1e-7: 0-2, 4, 6-8, 10, 13-14 (the seed's numbers).
    # Token 2 is the first byte piece of 민, token 4 the first piece of 국: each covers its character.
    r = score_confidence(tokens, low_confidence_threshold=0.9999999)
    pieces = [text[s.start:s.end] for s in r.low_confidence_spans]
    assert pieces == ["대한민", "국", "의 수도", " 서", "입니다."]
    assert [s.token_count for s in r.low_confidence_spans] == [3, 1, 3, 1, 2]
    assert r.low_confidence_spans[-1].min_probability == pytest.approx(math.exp(-0.15061288))
    # Default threshold: the seed's answer is confident everywhere.
    assert score_confidence(tokens).low_confidence_spans == ()


def test_a_lone_continuation_byte_token_maps_to_its_character() -> None:
    tokens = extract_token_logprobs(seed_korean_payload())
    low_only = {3}  # the '\xbc' piece of 민
    shaped = [TokenLogprob(t.token, t.bytes, -5.0 if i in low_only else 0.0) for i, t in enumerate(tokens)]
    r = score_confidence(shaped)
    text, _ = token_offsets(shaped)
    assert [(text[s.start:s.end], s.token_count) for s in r.low_confidence_spans] == [("민", 1)]


def test_english_seed_figures() -> None:
    logprobs = [-1.7523563, -0.019908238, -0.0093033705, -0.08852102]
    r = score_confidence(extract_token_logprobs(seed_english_stream()))
    assert r.sequence_logprob == pytest.approx(sum(logprobs))
    assert r.min_token_probability == pytest.approx(math.exp(-1.7523563))
    assert [(s.start, s.end) for s in r.low_confidence_spans] == [(0, 2)]  # 'As' at p = 0.17


def test_truncated_utf8_at_the_end_still_maps() -> None:
    tokens = [TokenLogprob("a", b"a", -0.1), TokenLogprob(None, bytes([0xEC, 0x9A]), -3.0)]
    text, offsets = token_offsets(tokens)
    assert text == "a\ufffd" and offsets == [(0, 1), (1, 2)]


# ---- properties --------------------------------------------------------------------------
logprobs = st.floats(min_value=-50.0, max_value=0.0, allow_nan=False)
alternatives = st.lists(logprobs, max_size=6)
tokens_st = st.lists(st.builds(lambda lp, alts: tok(lp, *alts), logprobs, alternatives), min_size=1, max_size=40)


@fuzz(300)
@given(tokens_st)
def test_perplexity_times_sequence_probability_is_one(tokens: list[TokenLogprob]) -> None:
    r = score_confidence(tokens)
    assert r.perplexity is not None and r.sequence_probability is not None
    assert r.perplexity * r.sequence_probability == pytest.approx(1.0, rel=1e-9)
    assert r.perplexity >= 1.0


@fuzz(300)
@given(tokens_st, st.floats(min_value=1e-6, max_value=1.0))
def test_probabilities_and_ratios_stay_in_their_ranges(tokens: list[TokenLogprob], threshold: float) -> None:
    r = score_confidence(tokens, low_confidence_threshold=threshold)
    for name in ("sequence_probability", "min_token_probability", "low_confidence_ratio",
                 "mean_token_negentropy", "mean_top_margin", "top_k_mass"):
        value = getattr(r, name)
        assert value is None or 0.0 <= value <= 1.0, (name, value)
    assert r.min_token_probability is not None and r.sequence_probability is not None
    assert r.min_token_probability <= r.sequence_probability + 1e-12  # min ≤ geometric mean
    assert r.mean_token_entropy is None or r.mean_token_entropy >= 0.0
    assert r.low_confidence_ratio is not None
    assert sum(s.token_count for s in r.low_confidence_spans) == round(r.low_confidence_ratio * r.token_count)


@fuzz(200)
@given(tokens_st, st.randoms(use_true_random=False))
def test_means_are_invariant_under_permutation(tokens: list[TokenLogprob], rnd: random.Random) -> None:
    shuffled = tokens[:]
    rnd.shuffle(shuffled)
    a, b = score_confidence(tokens), score_confidence(shuffled)
    for name in ("sequence_logprob", "mean_logprob", "perplexity", "min_token_probability",
                 "low_confidence_ratio", "mean_token_entropy", "mean_token_negentropy",
                 "mean_top_margin", "top_k_mass"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None and y is None) or x == pytest.approx(y, rel=1e-9, abs=1e-12), name


@fuzz(200)
@given(tokens_st)
def test_repeating_a_response_keeps_means_and_doubles_the_sum(tokens: list[TokenLogprob]) -> None:
    once, twice = score_confidence(tokens), score_confidence(tokens + tokens)
    assert twice.token_count == 2 * once.token_count
    assert twice.sequence_logprob == pytest.approx(2 * once.sequence_logprob, rel=1e-9, abs=1e-9)  # type: ignore[operator]
    assert twice.mean_logprob == pytest.approx(once.mean_logprob, rel=1e-9, abs=1e-12)


@fuzz(200)
@given(st.integers(min_value=2, max_value=8))
def test_uniform_alternatives_have_entropy_ln_k_and_negentropy_zero(k: int) -> None:
    r = score_confidence([tok(math.log(1 / k), *([math.log(1 / k)] * k))])
    assert r.mean_token_entropy == pytest.approx(math.log(k))
    assert r.mean_token_negentropy == pytest.approx(0.0, abs=1e-9)
    assert r.top_k_mass == pytest.approx(1.0)
