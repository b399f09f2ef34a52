"""Confidence as colour on the tokens: terminal heatmaps and one-line summaries.

``token_segments`` cuts the response text into the pieces a reader sees, one per token, with
correct character boundaries: a token that holds only part of a character (Korean, emoji sent as
UTF-8 byte pieces) is merged with the tokens that share that character, and the piece takes the
lowest probability among them. The HTML report uses the same segments.

Colour runs from red (probability 0) through amber (0.5) to green (1); tokens below the
low-confidence threshold are also bold and underlined (``«»`` around them without colour).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from observability.core.score import DEFAULT_LOW_CONFIDENCE_THRESHOLD
from observability.core.text import token_offsets
from observability.core.types import ConfidenceReport, FieldConfidence, ResponseRecord, TokenLogprob

RESET = "\x1b[0m"
LOW_MARKS = ("«", "»")
"""Put around low-confidence text when colour is off."""

# (probability, (r, g, b)) anchors; colours in between are interpolated linearly.
_ANCHORS = ((0.0, (215, 0, 0)), (0.5, (255, 215, 0)), (1.0, (95, 175, 95)))
_STATUS_COLOURS = {"ok": "32", "cancelled": "33", "error": "31"}


@dataclass(frozen=True, slots=True)
class Segment:
    """A visible piece of the response: ``text`` (may be empty for a token with no text, such as an
    end-of-generation token), the tokens it shows (indices), and the lowest probability among them."""

    text: str
    token_indices: tuple[int, ...]
    probability: float
    low: bool


def probability_rgb(probability: float) -> tuple[int, int, int]:
    """The heatmap colour of a probability (clamped to [0, 1]) as 0-255 RGB."""
    p = min(max(probability, 0.0), 1.0) if math.isfinite(probability) else 0.0
    for (p0, c0), (p1, c1) in itertools.pairwise(_ANCHORS):
        if p <= p1:
            t = (p - p0) / (p1 - p0)
            return (round(c0[0] + (c1[0] - c0[0]) * t), round(c0[1] + (c1[1] - c0[1]) * t),
                    round(c0[2] + (c1[2] - c0[2]) * t))
    return _ANCHORS[-1][1]


def xterm256(rgb: tuple[int, int, int]) -> int:
    """The nearest colour of the xterm 256-colour cube (indices 16-231) to an RGB triple."""
    levels = (0, 95, 135, 175, 215, 255)

    def level(value: int) -> int:
        return min(range(6), key=lambda i: abs(levels[i] - value))

    r, g, b = (level(v) for v in rgb)
    return 16 + 36 * r + 6 * g + b


def token_probability(token: TokenLogprob) -> float:
    """exp(logprob), clamped to [0, 1] (providers send tiny positive noise for certain tokens)."""
    lp = token.logprob
    if math.isnan(lp):
        return 0.0
    return math.exp(min(lp, 0.0))


def token_segments(tokens: Sequence[TokenLogprob],
                   low_confidence_threshold: float = DEFAULT_LOW_CONFIDENCE_THRESHOLD) -> list[Segment]:
    """Cut the response text (rebuilt from the tokens, as ``token_offsets`` does) into visible pieces.

    Each token that brings new characters starts a piece ending at its last character; a token
    whose characters are already shown (it finished a character begun earlier) joins the piece(s)
    holding them. A piece's probability is the minimum over its tokens; ``low`` when that is below
    the threshold. Joining the pieces' text gives the response text exactly.
    """
    text, offsets = token_offsets(tokens)
    pieces: list[tuple[int, int, list[int]]] = []  # start, end, token indices
    owner: list[int] = []  # character -> piece index
    cursor = 0
    for index, (start, end) in enumerate(offsets):
        covered = {owner[c] for c in range(start, min(end, cursor))}
        for piece in covered:
            pieces[piece][2].append(index)
        if end > cursor:
            owner.extend([len(pieces)] * (end - cursor))
            pieces.append((cursor, end, [index]))
            cursor = end
        elif not covered:  # a token with no text of its own
            pieces.append((cursor, cursor, [index]))
    segments = []
    for start, end, members in pieces:
        probability = min(token_probability(tokens[i]) for i in members)
        segments.append(Segment(text=text[start:end], token_indices=tuple(sorted(members)),
                                probability=probability, low=probability < low_confidence_threshold))
    return segments


def printable(text: str) -> str:
    """Text safe to print: control characters other than newline and tab are shown as symbols, so a
    model's output cannot move the cursor or change the terminal's colours."""
    return "".join(ch if ch in "\n\t" or (ch >= " " and ch != "\x7f" and not "\x80" <= ch <= "\x9f")
                   else ("␛" if ch == "\x1b" else "�") for ch in text)


def render_heatmap(tokens: Sequence[TokenLogprob], *, color: bool = True,
                   low_confidence_threshold: float = DEFAULT_LOW_CONFIDENCE_THRESHOLD,
                   indent: str = "") -> str:
    """The response text with each token's background coloured by its probability (xterm 256
    colours); low-confidence tokens bold and underlined. Without colour, low-confidence runs are
    wrapped in ``«»``. Lines after a newline start with ``indent``."""
    out: list[str] = [indent]
    in_low = False
    for segment in token_segments(tokens, low_confidence_threshold):
        text = printable(segment.text)
        if not color:
            if segment.low != in_low and text:
                out.append(LOW_MARKS[0] if segment.low else LOW_MARKS[1])
                in_low = segment.low
            out.append(text.replace("\n", "\n" + indent))
            continue
        style = f"\x1b[38;5;16;48;5;{xterm256(probability_rgb(segment.probability))}m"
        if segment.low:
            style = "\x1b[1;4m" + style
        lines = text.split("\n")
        for number, line in enumerate(lines):
            if number:
                out.append("\n" + indent)  # reset before the newline so colour does not bleed
            if line:
                out.append(f"{style}{line}{RESET}")
    if in_low:
        out.append(LOW_MARKS[1])
    return "".join(out)


def legend(*, color: bool = True) -> str:
    """One line explaining the colours."""
    if not color:
        return f"heatmap: {LOW_MARKS[0]}text{LOW_MARKS[1]} = tokens with probability below the threshold"
    cells = "".join(f"\x1b[38;5;16;48;5;{xterm256(probability_rgb(p))}m {p:.1f} {RESET}"
                    for p in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0))
    return f"token probability {cells}   \x1b[1;4mbold underlined{RESET} = below the low-confidence threshold"


def least_confident_field(report: ConfidenceReport) -> FieldConfidence | None:
    """The field of a JSON answer with the lowest ``min_token_probability`` (first of equals);
    None when there are no fields, or none has a scored token."""
    scored = [f for f in report.fields if f.min_token_probability is not None]
    return min(scored, key=lambda f: f.min_token_probability or 0.0) if scored else None


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _number(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def summary_line(record: ResponseRecord, *, color: bool = True, label: str = "") -> str:
    """One line: status, model, token count and the main confidence figures of a response.

    ``sequence p`` is the length-normalised sequence probability (geometric mean of the token
    probabilities), ``min p`` the least likely token's probability, ``low`` the share of tokens
    below the threshold. For a JSON answer with per-field figures (``report.fields``), the field
    whose least likely token is least likely is named with that probability.
    """
    error = record.error_type.rsplit(".", 1)[-1] if record.error_type else None  # the class name is enough here
    status = record.status if error is None else f"{record.status} ({error})"
    if color:
        status = f"\x1b[{_STATUS_COLOURS.get(record.status, '0')}m{status}{RESET}"
    parts = [f"{label} {status}".strip(), record.model or "unknown model"]
    report = record.report
    if report is None:
        parts.append(f"logprobs {record.logprobs.replace('_', ' ')}")
    else:
        spans = len(report.low_confidence_spans)
        parts += [
            f"{report.token_count} tokens",
            f"sequence p {_number(report.sequence_probability)}",
            f"perplexity {_number(report.perplexity)}",
            f"min p {_number(report.min_token_probability)}",
            f"low {_percent(report.low_confidence_ratio)} ({spans} span{'s' if spans != 1 else ''})",
        ]
        weakest = least_confident_field(report)
        if weakest is not None:
            parts.append(f"least sure field {printable(weakest.path) or '(root)'} "
                         f"(min p {_number(weakest.min_token_probability)})")
    parts.append(f"{record.duration_seconds:.1f} s")
    return " · ".join(parts)
