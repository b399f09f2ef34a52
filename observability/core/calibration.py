"""A calibration map: one raw confidence figure → the probability that the answer is right.

Fitted on labelled records by ``python -m observability evaluate … --calibration OUT.json``;
loaded by the handler (``ConfidenceCallbackHandler(calibration=PATH)``), which puts the mapped
value on each record (``calibrated_probability``) for the exporters.

Method: isotonic regression by pool-adjacent-violators. The labelled responses are sorted by the
figure oriented so that higher means more confident; tied figures form one block; adjacent blocks
are pooled while the earlier one's share of right answers is not below the later one's, so the
block accuracies rise strictly. Each final block becomes a point (mean figure of its responses,
share right). A figure maps by linear interpolation between the two neighbouring points, clamped
to the first / last point's probability outside them. Monotone, with no assumption about the
shape (a Platt fit assumes a logistic curve in one transform of the figure), standard library only.

File (``FORMAT``, ``FORMAT_VERSION``), JSON::

    {"format": "langchain-confidence.calibration", "version": 1, "method": "isotonic",
     "metric": "sequence_probability", "orientation": "increasing" | "decreasing",
     "labels": 60, "correct": 49, "fitted_at": "2026-11-27T13:00:00Z",
     "points": [[figure, probability], ...]}   (figure strictly ascending; probability in [0, 1],
                                                non-decreasing for "increasing", non-increasing else)

Standard library only: the handler imports it.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

from observability.core.types import ConfidenceReport

FORMAT = "langchain-confidence.calibration"
FORMAT_VERSION = 1
METHOD = "isotonic"
DEFAULT_METRIC = "sequence_probability"
MIN_LABELS = 20
"""Fewer labelled responses than this are refused: a map from a handful of answers is noise."""
FIGURES = tuple(f.name for f in dataclasses.fields(ConfidenceReport) if f.type == "float | None")
"""The report figures a map can be fitted on (every float figure of ``ConfidenceReport``)."""
ORIENTATIONS = ("increasing", "decreasing")
MAX_FILE_BYTES = 16 * 2**20
"""A larger file is refused unread: a map has one line of about 45 bytes per point, so this is room
for some 350,000 points (at most one per distinct labelled figure)."""
_HOW_TO_MAKE = ("write one with: python -m observability evaluate RECORDS.jsonl --labels LABELS.jsonl "
                "--calibration OUT.json")


class CalibrationError(ValueError):
    """A calibration map cannot be fitted, read or used; the message names the problem and the fix."""


@dataclass(frozen=True, slots=True)
class CalibrationMap:
    """An isotonic map from ``metric`` (a ``ConfidenceReport`` figure) to P(the answer is right).

    ``points`` are ``(figure, probability)`` with the figure strictly ascending; ``orientation``
    says whether the probability rises (``increasing``) or falls (``decreasing``) with the figure.
    ``labels`` / ``correct``: how many labelled responses it was fitted on, how many were right.
    """

    metric: str
    orientation: str
    points: tuple[tuple[float, float], ...]
    labels: int
    correct: int
    fitted_at: str
    method: str = METHOD

    def __call__(self, figure: float) -> float:
        """The calibrated probability of ``figure``: linear between the neighbouring points,
        the end point's probability beyond them."""
        xs = [x for x, _ in self.points]
        i = bisect.bisect_right(xs, figure)
        if i == 0:
            return self.points[0][1]
        if i == len(xs):
            return self.points[-1][1]
        (x0, p0), (x1, p1) = self.points[i - 1], self.points[i]
        # Near the float limits the points' distance overflows; their halves' does not.
        share = ((figure - x0) / (x1 - x0) if math.isfinite(x1 - x0)
                 else (figure / 2 - x0 / 2) / (x1 / 2 - x0 / 2))
        return p0 + (p1 - p0) * share

    def apply(self, report: ConfidenceReport) -> float | None:
        """The calibrated probability of a response, None when its figure is missing or not finite."""
        figure = getattr(report, self.metric)
        if figure is None or not math.isfinite(figure):
            return None
        return self(float(figure))

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "method": self.method, "metric": self.metric,
                "orientation": self.orientation, "labels": self.labels, "correct": self.correct,
                "fitted_at": self.fitted_at, "points": [[x, p] for x, p in self.points]}

    @classmethod
    def from_json(cls, data: object, where: str = "calibration map") -> CalibrationMap:
        """Validate and build; ``CalibrationError`` naming ``where`` and the field otherwise."""

        def bad(problem: str) -> CalibrationError:
            return CalibrationError(f"{where}: {problem}; {_HOW_TO_MAKE}")

        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise bad(f'not a calibration map (expected "format": "{FORMAT}")')
        if data.get("version") != FORMAT_VERSION:
            raise bad(f"unsupported version {data.get('version')!r}; this package reads version {FORMAT_VERSION}")
        if data.get("method") != METHOD:
            raise bad(f"unknown method {data.get('method')!r}; this package applies {METHOD!r} maps")
        metric, orientation = data.get("metric"), data.get("orientation")
        if metric not in FIGURES:
            raise bad(f"unknown metric {metric!r}; one of {', '.join(FIGURES)}")
        if orientation not in ORIENTATIONS:
            raise bad(f'"orientation" must be "increasing" or "decreasing", got {orientation!r}')
        points = data.get("points")
        if not isinstance(points, list) or not points:
            raise bad('"points" must be a non-empty list of [figure, probability] pairs')
        pairs: list[tuple[float, float]] = []
        for number, point in enumerate(points):
            if not (isinstance(point, list) and len(point) == 2 and all(_is_number(v) for v in point)):
                raise bad(f"points[{number}] is not a [figure, probability] pair of finite numbers: {point!r}")
            figure, probability = float(point[0]), float(point[1])
            if not 0.0 <= probability <= 1.0:
                raise bad(f"points[{number}]: probability {probability} is outside [0, 1]")
            if pairs and figure <= pairs[-1][0]:
                raise bad(f"points[{number}]: figures must be strictly ascending")
            if pairs and (probability - pairs[-1][1]) * (1 if orientation == "increasing" else -1) < 0:
                raise bad(f"points[{number}]: probabilities must be monotone ({orientation}) in the figure")
            pairs.append((figure, probability))
        labels, correct = data.get("labels"), data.get("correct")
        if not (_is_count(labels) and _is_count(correct) and correct <= labels):
            raise bad('"labels" and "correct" must be counts with correct <= labels')
        fitted_at = data.get("fitted_at")
        if not isinstance(fitted_at, str):
            raise bad('"fitted_at" must be a timestamp string')
        return cls(metric, orientation, tuple(pairs), labels, correct, fitted_at)


def fit_isotonic(figures: Sequence[float], correct: Sequence[bool], *, metric: str = DEFAULT_METRIC,
                 increasing: bool = True, min_labels: int = MIN_LABELS) -> CalibrationMap:
    """The isotonic map of ``correct`` on ``figures`` (see the module docstring for the method).

    ``increasing``: whether a higher figure means more confident (False for perplexity, entropy,
    the low-confidence ratio). Raises ``CalibrationError`` for fewer than ``min_labels`` responses,
    for a single class (all right or all wrong), or for a figure that is not finite.
    """
    if len(figures) != len(correct):
        raise ValueError("figures and correct must have the same length")
    if metric not in FIGURES:
        raise CalibrationError(f"cannot calibrate on {metric!r}: choose one of {', '.join(FIGURES)}")
    unusable = sum(not _is_number(v) for v in figures)
    if unusable:
        raise CalibrationError(f"cannot calibrate on {metric}: {unusable} of {len(figures)} labelled responses have "
                               "a figure that is not a finite number (an infinite perplexity or entropy comes from "
                               "a token of probability 0); calibrate on a bounded figure such as "
                               "--calibration-metric sequence_probability")
    right = sum(bool(y) for y in correct)
    if len(figures) < min_labels:
        raise CalibrationError(f"only {len(figures)} labelled responses have a {metric}; a calibration map needs "
                               f"at least {min_labels}: label more responses")
    if right in (0, len(figures)):
        raise CalibrationError(f"all {len(figures)} labelled responses are {'right' if right else 'wrong'}; "
                               "a calibration map needs both right and wrong answers: label more varied responses")
    sign = 1.0 if increasing else -1.0
    tied: dict[float, list[float]] = {}  # figure -> [right answers, responses]
    for figure, y in zip(figures, correct, strict=True):
        counts = tied.setdefault(float(figure), [0.0, 0.0])
        counts[0] += bool(y)
        counts[1] += 1
    blocks: list[tuple[float, float, float]] = []  # (mean figure, right answers, responses), least confident first
    for figure in sorted(tied, key=lambda x: sign * x):
        hits, count = tied[figure]
        blocks.append((figure, hits, count))
        # Pool while the accuracies do not rise, or while rounding puts two means at one figure
        # (figures a few ulps apart): the file needs strictly ascending figures.
        while len(blocks) > 1 and (blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]
                                   or sign * blocks[-2][0] >= sign * blocks[-1][0]):
            blocks[-2:] = [_pooled(blocks[-2], blocks[-1])]
    points = [(mean, hits / count) for mean, hits, count in blocks]
    if not increasing:
        points.reverse()
    return CalibrationMap(metric, "increasing" if increasing else "decreasing", tuple(points), len(figures),
                          right, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def _pooled(a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, float, float]:
    """Two adjacent blocks as one; the mean is weighted so that it cannot overflow (a sum of
    figures near the float maximum would)."""
    count = a[2] + b[2]
    return a[0] * (a[2] / count) + b[0] * (b[2] / count), a[1] + b[1], count


def write_calibration(calibration: CalibrationMap, path: str | os.PathLike[str]) -> None:
    """The map as a JSON file, one point a line; checked as the loader checks it first, so what is
    written always loads (``CalibrationError`` otherwise, and nothing is written)."""
    CalibrationMap.from_json(calibration.to_json(), "the fitted calibration map")
    data = calibration.to_json()
    points = ",\n".join(f"    {json.dumps(point)}" for point in data.pop("points"))
    text = json.dumps(data, indent=2).removesuffix("\n}")
    Path(path).write_text(f'{text},\n  "points": [\n{points}\n  ]\n}}\n', encoding="utf-8")


def load_calibration(source: object) -> CalibrationMap:
    """A ``CalibrationMap`` as given (checked like a file), or read from a file path.
    ``CalibrationError`` (naming the file and the fix) for a missing or unreadable file or one that
    is not a valid map; ``TypeError`` for anything else."""
    if isinstance(source, CalibrationMap):
        CalibrationMap.from_json(source.to_json())  # the checks a file gets
        return source
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        raise TypeError(f"calibration must be a file path or a CalibrationMap, got {source!r}")
    path = Path(source)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise CalibrationError(f"calibration file {path} does not exist; {_HOW_TO_MAKE}") from None
    except (OSError, ValueError) as exc:  # a directory, no permission, not UTF-8, a NUL in the path
        raise CalibrationError(f"calibration file {path} cannot be read ({type(exc).__name__}); "
                               "give the path of a calibration map JSON file") from None
    if len(raw) > MAX_FILE_BYTES:
        raise CalibrationError(f"calibration file {path} is larger than {MAX_FILE_BYTES // 2**20} MiB, far more "
                               f"than any map; {_HOW_TO_MAKE}")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: brackets nested thousands deep
        problem = exc.args[0] if isinstance(exc, ValueError) and exc.args else "nested too deeply"
        raise CalibrationError(f"calibration file {path} is not JSON ({problem}); {_HOW_TO_MAKE}") from None
    return CalibrationMap.from_json(data, f"calibration file {path}")


def _is_number(value: object) -> bool:
    """A finite int or float; an integer too large for a float (JSON allows 400 digits) is not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
