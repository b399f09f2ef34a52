"""The inline reading of plain chat entries (``_extract.read_columns``, what the handler scores)
against the general per-field reader (``_extract._entry``, which handles every shape): the same
tokens and the same report, float for float, on random OpenAI chat payloads, plain and with one
defect each. (``test_core_reference.py`` checks both against the formulas, computed apart.)"""

from __future__ import annotations

import itertools
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from observability import TokenLogprob, extract_token_logprobs, score_confidence
from observability.core.extract import _entry
from observability.core.text import _piece
from observability.core.types import TokenLogprobs, token_columns
from tests.fuzzing import fuzz
from tests.test_core_extract import seed_english_stream, seed_korean_payload

plain_logprobs = st.one_of(
    st.floats(min_value=-12.0, max_value=0.0),  # real ones: the order of the sums shows in the bits
    st.floats(min_value=-12.0, max_value=0.0),
    st.floats(max_value=0.0, allow_nan=False),  # includes -inf and -0.0
    st.sampled_from([-0.0, 0.0, -1e-300, -708.5, -800.0, math.log(0.5), -math.inf]),
)
odd_logprobs = st.one_of(  # each sends the response to the general path
    st.sampled_from([math.nan, math.inf, 5e-5, 1e-4, 2e-4, 1.0, None, True, "-0.5"]),
    st.integers(min_value=-5, max_value=2),
)
texts = st.one_of(st.text(max_size=4), st.sampled_from(["서울", "\ud800", " the", ""]), st.none())
Entry = dict[str, Any]


def _korean_pieces(text: str, cuts: list[int]) -> list[bytes]:
    """``text``'s UTF-8 cut at ``cuts``: characters split across tokens, as providers send Korean."""
    raw = text.encode()
    points = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
    return [raw[a:b] for a, b in itertools.pairwise(points)]


@st.composite
def alternatives(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.sampled_from([None, [], "missing"]))
    values = sorted(draw(st.lists(plain_logprobs, max_size=7)), reverse=True)  # best first, as sent
    return [{"token": draw(texts), "bytes": None, "logprob": v} for v in values]


@st.composite
def plain_payloads(draw: st.DrawFn) -> list[Entry]:
    """Entries in the plain shape: bytes valid, Korean pieces, missing or junk."""
    size = draw(st.integers(0, 40))
    pieces = _korean_pieces(draw(st.sampled_from(["대한민국의 수도는 서울입니다.", "As an AI, 😀 ok"])),
                            draw(st.lists(st.integers(0, 60), max_size=size)))
    entries: list[Entry] = []
    for i in range(size):
        entry: Entry = {"token": draw(texts), "logprob": draw(plain_logprobs)}
        form = draw(st.integers(0, 4))
        if form == 0 and i < len(pieces):
            entry["bytes"], entry["token"] = list(pieces[i]), "bytes:" + repr(pieces[i])
        elif form == 1:
            entry["bytes"] = list((entry["token"] or "").encode("utf-8", "surrogatepass"))
        elif form == 2:
            entry["bytes"] = draw(st.one_of(st.none(), st.lists(st.integers(-2, 300), max_size=3),
                                            st.binary(max_size=3)))
        tops = draw(alternatives())
        if tops != "missing":
            entry["top_logprobs"] = tops
        entries.append(entry)
    return entries


@st.composite
def payloads(draw: st.DrawFn) -> tuple[list[Any], bool]:
    """(entries, whether every entry is in the plain shape): a plain payload, and in half the
    cases one defect in one entry, each sending the response to the general path."""
    entries: list[Any] = draw(plain_payloads())
    defect = draw(st.integers(0, 11))
    if not entries or defect < 6:
        return entries, True
    entry = entries[draw(st.integers(0, len(entries) - 1))]
    tops = entry.get("top_logprobs") or []
    if defect == 6:
        entry["logprob"] = draw(odd_logprobs)
    elif defect == 7:
        del entry["logprob"]
    elif defect == 8:
        entries[entries.index(entry)] = draw(st.sampled_from([None, "x", -0.5, ["x"]]))
    elif defect == 9:  # not best first, in every entry: extraction sorts them (changing the sums' bits)
        for other in entries:
            if isinstance(other.get("top_logprobs"), list):
                other["top_logprobs"].reverse()
    elif defect == 10:
        tops.insert(draw(st.integers(0, len(tops))), draw(st.one_of(
            odd_logprobs.map(lambda v: {"token": "x", "logprob": v}),
            st.sampled_from([None, "x", {"token": "x"}, 3.0]))))
        entry["top_logprobs"] = tops
    else:
        entry["top_logprobs"] = draw(st.sampled_from([(), {"a": -0.5}, "", 0]))
    return entries, False


ONE_LOG = ("entropy_sum", "negentropy_sum", "mean_token_entropy", "mean_token_negentropy")
"""Summed as ln(prod z / p_1) - sum(w / z - l_1) on the inline path (issue 29), per token on the
general one: equal to 1e-12 relative (docs/confidence.md, "How exact"); every other figure is
equal float for float."""


def same_sums(fast: Any, general: Any) -> None:
    for name in type(fast)._fields:
        got, want = getattr(fast, name), getattr(general, name)
        if name in ONE_LOG:
            assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-300), name
        else:
            assert repr(got) == repr(want), name


def same_report(fast: Any, general: Any) -> None:
    for name in type(fast).__slots__:
        got, want = getattr(fast, name), getattr(general, name)
        if name in ONE_LOG and got is not None and want is not None:
            assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-300), name
        else:
            assert repr(got) == repr(want), name


def general_reading(entries: list[Any]) -> tuple[list[TokenLogprob], int]:
    """What the general reader makes of each entry: the reference for the inline path."""
    tokens = [_entry(entry) for entry in entries]
    return [t for t in tokens if t is not None], sum(t is None for t in tokens)


@fuzz(400)
@given(payloads())
def test_inline_reading_gives_what_the_general_reader_gives(case: tuple[list[Any], bool]) -> None:
    entries, _ = case
    tokens = extract_token_logprobs({"content": entries, "refusal": None})
    expected, skipped = general_reading(entries)
    # What scoring reads, before any token object exists, then the tokens themselves.
    assert len(tokens) == len(expected) and tokens.skipped == skipped
    columns, reference = tokens.columns, token_columns(expected)
    assert repr([list(columns.texts), list(columns.logprobs)]) == repr(
        [list(reference.texts), list(reference.logprobs)])
    same_sums(columns.sums, reference.sums)
    assert list(map(_piece, columns.pieces, columns.texts)) == list(map(_piece, reference.pieces, reference.texts))
    same_report(score_confidence(tokens), score_confidence(TokenLogprobs(expected, skipped)))
    assert list(tokens) == expected
    assert repr(list(tokens)) == repr(expected)  # float for float, -0.0 included
    assert all(type(t) is TokenLogprob for t in tokens)
    assert repr(score_confidence(list(tokens))) == repr(score_confidence(expected))


def test_alternatives_come_out_best_first_whatever_the_order_sent() -> None:
    entry: dict[str, Any] = {"token": "a", "logprob": -0.5, "top_logprobs": [
        {"token": "b", "logprob": -2.0}, {"token": "a", "logprob": -0.5}, {"token": "c", "logprob": -0.1}]}
    (token,) = tokens = extract_token_logprobs([entry])
    assert token.top_logprobs == (("c", -0.1), ("a", -0.5), ("b", -2.0))
    sorted_first = extract_token_logprobs([{**entry, "top_logprobs": sorted(
        entry["top_logprobs"], key=lambda alt: -alt["logprob"])}])
    assert repr(score_confidence(tokens)) == repr(score_confidence(sorted_first))


def test_malformed_alternatives_are_dropped_not_kept() -> None:
    entry = {"token": "a", "logprob": -0.5, "top_logprobs": [
        {"token": "a", "logprob": -0.5}, {"token": "b", "logprob": math.nan}, {"token": 7, "logprob": -1.0},
        {"token": "c", "logprob": 0.5}, {"token": "d"}]}
    (token,) = extract_token_logprobs([entry])
    assert token.top_logprobs == (("a", -0.5), (None, -1.0))


def test_seeds_read_the_same_both_ways() -> None:
    for entries in (seed_english_stream(), seed_korean_payload()["content"]):
        expected, skipped = general_reading(entries)
        tokens = extract_token_logprobs(entries)
        assert tokens._tokens is None  # read as columns: scored with no object per token
        same_report(score_confidence(tokens), score_confidence(expected))
        assert tokens._tokens is None
        assert repr(list(tokens)) == repr(expected) and tokens.skipped == skipped == 0


def test_a_json_false_or_zero_int_best_alternative_among_five_is_left_out_as_the_general_reader_does() -> None:
    # The inline pass checks a best logprob of 0 for JSON's `false` only where z >= 1 (issue 29);
    # `false` and `0` are not logprobs, 0.0 is. 1,200 tokens: more than one 256-token block.
    for best in (False, 0, 0.0):
        five = (("a", -0.25), ("b", -1.5), ("c", -2.0), ("d", -3.0), ("e", -4.0))
        entries: list[Entry] = [{"token": "a", "logprob": -0.25, "bytes": [97],
                                 "top_logprobs": [{"token": t, "logprob": lp} for t, lp in five]} for _ in range(1200)]
        entries[700]["top_logprobs"][0]["logprob"] = best
        tokens = extract_token_logprobs({"content": entries, "refusal": None})
        expected, skipped = general_reading(entries)
        assert list(tokens) == expected and tokens.skipped == skipped
        same_sums(tokens.columns.sums, token_columns(expected).sums)
        same_report(score_confidence(tokens), score_confidence(TokenLogprobs(expected, skipped)))
