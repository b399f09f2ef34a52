"""The terminal heatmap and the one-line summary: colours, highlighting, character boundaries."""

from __future__ import annotations

import math
import re

from hypothesis import given
from hypothesis import strategies as st

from observability import TokenLogprob, score_confidence
from observability.core.types import TokenLogprobs
from observability.report.heatmap import (
    LOW_MARKS,
    probability_rgb,
    render_heatmap,
    summary_line,
    token_segments,
    xterm256,
)
from tests.demo_support import KOREAN_TEXT, expected_pieces, korean_tokens, record_for

BACKGROUND = re.compile(r"\x1b\[(?:1;4m\x1b\[)?38;5;16;48;5;(\d+)m([^\x1b]*)\x1b\[0m")


def tok(text: str, probability: float, alternatives: tuple[tuple[str, float], ...] = ()) -> TokenLogprob:
    return TokenLogprob(token=text, bytes=text.encode(), logprob=math.log(probability) if probability else -math.inf,
                        top_logprobs=alternatives)


def test_colours_run_from_red_through_amber_to_green() -> None:
    # xterm cube index 16 + 36r + 6g + b with levels (0, 95, 135, 175, 215, 255), worked out by hand:
    # red (215, 0, 0) -> 160, amber (255, 215, 0) -> 220, green (95, 175, 95) -> 71
    out = render_heatmap([tok("A", 0.0), tok("B", 0.5), tok("C", 1.0)], low_confidence_threshold=0.4)
    assert BACKGROUND.findall(out) == [("160", "A"), ("220", "B"), ("71", "C")]
    assert probability_rgb(0.25) == (235, 108, 0)  # halfway between red and amber
    assert xterm256((255, 255, 255)) == 231 and xterm256((0, 0, 0)) == 16


def test_low_confidence_tokens_are_bold_and_underlined() -> None:
    out = render_heatmap([tok("sure", 0.99), tok(" maybe", 0.2), tok(" fine", 0.7)])
    assert "\x1b[1;4m\x1b[38;5;16;48;5;" in out
    low = re.findall(r"\x1b\[1;4m\x1b\[38;5;16;48;5;\d+m([^\x1b]*)", out)
    assert low == [" maybe"]


def test_without_colour_low_spans_are_marked() -> None:
    tokens = [tok("The", 0.9), tok(" answer", 0.3), tok(" is", 0.2), tok(" 42", 0.95), tok(".", 0.1)]
    out = render_heatmap(tokens, color=False)
    assert "\x1b" not in out
    assert out == f"The{LOW_MARKS[0]} answer is{LOW_MARKS[1]} 42{LOW_MARKS[0]}.{LOW_MARKS[1]}"


def test_model_output_cannot_inject_terminal_codes() -> None:
    out = render_heatmap([tok("\x1b[2J", 0.9), tok("ok", 0.9)], color=False)
    assert "\x1b" not in out and out.endswith("ok")


def test_colour_is_reset_before_each_newline() -> None:
    out = render_heatmap([tok("line one\nline", 0.3), tok(" two", 0.9)], indent="  ")
    for line in out.split("\n"):
        assert line.count("\x1b[0m") == line.count("48;5;"), line  # every style closed on its own line
    assert out.split("\n")[1].startswith("  ")


def test_korean_byte_pieces_render_as_whole_characters() -> None:
    tokens = korean_tokens()
    expected = expected_pieces(tokens)
    segments = token_segments(tokens)
    assert [(s.text, list(s.token_indices)) for s in segments] == expected
    assert "".join(s.text for s in segments) == KOREAN_TEXT
    plain = render_heatmap(tokens, color=False)
    assert plain == KOREAN_TEXT and "\ufffd" not in plain
    coloured = [text for _, text in BACKGROUND.findall(render_heatmap(tokens))]
    assert coloured == [text for text, _ in expected]


def test_a_piece_takes_the_lowest_probability_of_its_tokens() -> None:
    han = "한".encode()
    tokens = [TokenLogprob(None, han[:2], math.log(0.9)), TokenLogprob(None, han[2:], math.log(0.3))]
    (segment,) = token_segments(tokens)
    assert segment.text == "한" and segment.token_indices == (0, 1)
    assert math.isclose(segment.probability, 0.3) and segment.low


def test_a_token_without_text_is_its_own_empty_piece() -> None:
    segments = token_segments([tok("Hi", 0.9), tok("", 0.8)])
    assert [(s.text, s.token_indices) for s in segments] == [("Hi", (0,)), ("", (1,))]


@given(st.text(min_size=1, max_size=30), st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=40))
def test_pieces_always_rebuild_the_text_and_show_every_token(text: str, cuts: list[int]) -> None:
    raw = text.encode("utf-8", "surrogatepass")
    tokens, at, i = [], 0, 0
    while at < len(raw):
        size = cuts[i % len(cuts)]
        tokens.append(TokenLogprob(None, raw[at:at + size], -0.1 * (i % 7)))
        at, i = at + size, i + 1
    segments = token_segments(tokens)
    assert "".join(s.text for s in segments) == raw.decode("utf-8", "replace")
    assert {i for s in segments for i in s.token_indices} == set(range(len(tokens)))  # every token shown
    for index in range(len(tokens)):  # a token spanning a character boundary sits in adjacent pieces
        holding = [n for n, s in enumerate(segments) if index in s.token_indices]
        assert holding == list(range(holding[0], holding[-1] + 1))


def test_summary_line_shows_the_figures() -> None:
    # p = 0.5 and 0.8: sequence p = sqrt(0.4) = 0.632, perplexity = 1/0.632 = 1.581, min p 0.5,
    # low share 0 (0.5 is not below the 0.5 threshold)
    record = record_for(TokenLogprobs([tok("Yes", 0.5), tok(".", 0.8)]), model="m1")
    line = summary_line(record, color=False, label="#1")
    assert line.startswith("#1 ok · m1 · 2 tokens")
    assert "sequence p 0.63" in line and "perplexity 1.58" in line and "min p 0.50" in line
    assert "low 0% (0 spans)" in line and line.endswith("1.2 s")
    assert "\x1b[32mok\x1b[0m" in summary_line(record, color=True)


def test_summary_line_without_logprobs_says_so() -> None:
    from dataclasses import replace

    record = replace(record_for(TokenLogprobs([tok("x", 0.5)])), report=None, logprobs="not_returned", status="error",
                     error_type="APITimeoutError", tokens=())
    line = summary_line(record, color=False)
    assert line.startswith("error (APITimeoutError)") and "logprobs not returned" in line
    assert score_confidence([]).token_count == 0  # the scorer, not the summary, decides what is scored


def test_summary_line_names_the_least_confident_field() -> None:
    from dataclasses import replace

    from observability.core.fields import field_confidence

    pieces = [("{\"", 0.99), ("city", 0.99), ("\":", 0.99), (" \"", 0.9), ("Seoul", 0.8), ("\",", 0.99),
              (" \"", 0.99), ("year", 0.99), ("\":", 0.99), (" 19", 0.3), ("48", 0.6), ("}", 0.99)]
    tokens = TokenLogprobs(tok(text, p, ((text, math.log(p)),)) for text, p in pieces)
    report = replace(score_confidence(tokens), fields=())
    record = replace(record_for(tokens), report=replace(report, fields=field_confidence(tokens)))
    assert [f.path for f in record.report.fields] == ["/city", "/year"]  # type: ignore[union-attr]
    line = summary_line(record, color=False)
    assert line.endswith("least sure field /year (min p 0.30) · 1.2 s"), line
    assert "least sure field" not in summary_line(replace(record, report=report), color=False)  # no fields
    unscored = replace(record.report.fields[0], min_token_probability=None)  # type: ignore[union-attr]
    assert "least sure field" not in summary_line(
        replace(record, report=replace(report, fields=(unscored,))), color=False)
