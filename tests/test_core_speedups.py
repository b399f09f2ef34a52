"""The C part of the fast path (``observability._speedups``): that it was built, its spans, its
arguments. (tests/test_core_fastpath.py compares its reports with the general path's, float for
float, on random payloads.)

``make setup`` compiles it, so these tests require it: a build that silently fell back to the
general path would otherwise leave the C code untested.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from observability import _score
from observability._extract import entry_piece
from observability._score import LOGPROB_FLOOR, _spans, score_chat_entries
from observability._text import piece_offsets
from observability._types import LowConfidenceSpan
from tests.test_core_extract import seed_english_stream
from tests.test_core_fastpath import FUZZ, payloads

try:
    from observability._speedups import sum_chat_entries, use_span_type
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError("observability._speedups is not compiled: install a C compiler and Python's headers "
                      "(apt-get install build-essential python3-dev) and run `make setup` again") from exc


def test_the_package_scores_with_the_c_sums() -> None:
    assert _score._speedups is not None and _score._speedups.sum_chat_entries is sum_chat_entries
    assert score_chat_entries(seed_english_stream()) is not None


@FUZZ
@given(case=payloads(), threshold=st.sampled_from([0.5, 1.0, 1e-9, 0.9]))
def test_c_spans_are_the_ones_python_builds_from_the_offsets(case: tuple[list[Any], bool], threshold: float) -> None:
    entries, _ = case
    sums = sum_chat_entries(entries, math.log(threshold), LOGPROB_FLOOR)
    if sums is None or sums[-1] is None:  # not the plain shape, or characters split across tokens
        return
    low, spans = sums[-2], sums[-1]
    expected = _spans(low, piece_offsets([entry_piece(e) for e in entries])[1]) if low else ()
    assert repr(tuple(spans)) == repr(expected)


def _entry(piece: bytes, logprob: float) -> dict[str, Any]:
    return {"token": piece.decode(errors="replace"), "bytes": list(piece), "logprob": logprob, "top_logprobs": []}


def test_c_builds_spans_for_whole_characters_and_leaves_split_ones_to_python() -> None:
    pieces = [("서울", -0.1), (" 은", -2.0), ("🙂", -3.0), ("x", -0.1), ("y", -1.0)]
    whole = [_entry(text.encode(), lp) for text, lp in pieces]
    spans = sum_chat_entries(whole, math.log(0.5), LOGPROB_FLOOR)[-1]  # type: ignore[index]
    assert spans == [LowConfidenceSpan(start=2, end=5, min_probability=math.exp(-3.0), token_count=2),
                     LowConfidenceSpan(start=6, end=7, min_probability=math.exp(-1.0), token_count=1)]
    assert all(type(span) is LowConfidenceSpan for span in spans)  # characters, not bytes
    raw = "민".encode()
    split = [_entry(raw[:2], -0.1), _entry(raw[2:], -2.0)]  # one character in two byte pieces
    assert sum_chat_entries(split, math.log(0.5), LOGPROB_FLOOR)[-1] is None  # type: ignore[index]
    report = score_chat_entries(split)
    assert report is not None and [(s.start, s.end) for s in report.low_confidence_spans] == [(0, 1)]


def test_spans_built_in_c_behave_as_the_dataclass() -> None:
    [span] = sum_chat_entries([_entry(b"ab", -2.0)], math.log(0.5), LOGPROB_FLOOR)[-1]  # type: ignore[index,misc]
    made = LowConfidenceSpan(start=0, end=2, min_probability=math.exp(-2.0), token_count=1)
    assert span == made and hash(span) == hash(made) and repr(span) == repr(made)
    assert pickle.loads(pickle.dumps(span)) == made and dataclasses.asdict(span) == dataclasses.asdict(made)
    with pytest.raises(dataclasses.FrozenInstanceError):
        span.start = 1  # type: ignore[misc]


def test_wrong_arguments_are_a_type_error_not_a_crash() -> None:
    for args in [(), ((), 0.0, 0.0), ([], "x", 0.0), ([], 0.0)]:
        with pytest.raises(TypeError):
            sum_chat_entries(*args)
    with pytest.raises(TypeError, match="no slot"):
        use_span_type(int)
