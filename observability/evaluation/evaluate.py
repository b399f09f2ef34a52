"""Which confidence figure predicts a wrong answer, and at what threshold: ``python -m observability
evaluate RECORDS.jsonl --labels LABELS.jsonl``.

RECORDS is a record file (``record_to=``); LABELS has one JSON object per line,
``{"run_id": "...", "correct": true|false}`` (optional ``"choice_index"``, default 0). Every figure
is oriented so that higher means more confident (``SIGNS``) before it is ranked:

    auroc     P(score of a right answer > score of a wrong one), ties counting half
    brier     mean (p - y)^2, for figures that are probabilities (``PROBABILITIES``)
    ece       sum over 10 equal-width bins of [0, 1] (the last includes 1) of
              |mean p - accuracy| * bin count / n
    coverage  accuracy of the most confident x % of answers, x = 10 % … 100 %
    flag      the highest threshold whose flagged set (figure below it) is at least
              ``target_precision`` wrong answers, and how many it flags

With ``--calibration OUT.json`` it also fits an isotonic map from one figure to P(right) on the
labelled responses (``observability.core.calibration``) for ``ConfidenceCallbackHandler(calibration=)``.

Standard library only; the numbers are checked against independent computations in the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from observability.core.calibration import (
    DEFAULT_METRIC,
    CalibrationError,
    CalibrationMap,
    fit_isotonic,
    write_calibration,
)

SIGNS = {"sequence_probability": 1, "min_token_probability": 1, "mean_top_margin": 1,
         "low_confidence_ratio": -1, "mean_token_entropy": -1, "perplexity": -1}
"""Each figure evaluated, and the sign that makes higher mean more confident."""
PROBABILITIES = ("sequence_probability", "min_token_probability")
"""Figures read as a probability of being right, for Brier score and calibration error."""
COVERAGES = tuple(round(0.1 * k, 1) for k in range(1, 11))


class LabelFileError(ValueError):
    """A line of the labels file is not ``{"run_id": ..., "correct": true|false}``."""


@dataclass(frozen=True)
class Labelled:
    """One response with a label: its figures (raw, not oriented) and whether it was right."""

    figures: dict[str, float]
    correct: bool


def read_labels(path: str | Path) -> dict[tuple[str, int], bool]:
    """``(run_id, choice_index) -> correct`` from a labels file; errors name the line."""
    labels: dict[tuple[str, int], bool] = {}
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise LabelFileError(f"{where}: not JSON ({exc.args[0]})") from None
            if not isinstance(data, dict) or not isinstance(data.get("run_id"), str):
                raise LabelFileError(f'{where}: expected {{"run_id": "...", "correct": true|false}}')
            correct = data.get("correct")
            choice = data.get("choice_index", 0)
            if not isinstance(correct, bool):
                raise LabelFileError(f"{where}: \"correct\" must be true or false, got {correct!r}")
            if isinstance(choice, bool) or not isinstance(choice, int) or choice < 0:
                raise LabelFileError(f"{where}: \"choice_index\" must be a non-negative integer, got {choice!r}")
            labels[(data["run_id"], choice)] = correct
    return labels


def join(records: Sequence[Any], labels: dict[tuple[str, int], bool]) -> list[Labelled]:
    """The labelled responses that have a report, in record order."""
    joined = []
    for record in records:
        correct = labels.get((str(record.start.run_id), record.choice_index))
        if correct is None or record.report is None or record.report.token_count == 0:
            continue
        figures = {name: getattr(record.report, name) for name in SIGNS}
        joined.append(Labelled({k: float(v) for k, v in figures.items() if v is not None}, correct))
    return joined


def auroc(scores: Sequence[float], correct: Sequence[bool]) -> float | None:
    """Mann–Whitney AUROC by ranks (ties get their mean rank, i.e. count half); None without
    both right and wrong answers."""
    positives = sum(correct)
    negatives = len(correct) - positives
    if not positives or not negatives:
        return None
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        mean_rank = (i + j) / 2 + 1
        rank_sum += mean_rank * sum(correct[order[k]] for k in range(i, j + 1))
        i = j + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def brier(probabilities: Sequence[float], correct: Sequence[bool]) -> float:
    return math.fsum((p - y) ** 2 for p, y in zip(probabilities, correct, strict=True)) / len(correct)


def ece(probabilities: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    counts = [0] * bins
    sums = [0.0] * bins
    hits = [0] * bins
    for p, y in zip(probabilities, correct, strict=True):
        b = min(int(p * bins), bins - 1)  # the last bin includes 1
        counts[b] += 1
        sums[b] += p
        hits[b] += y
    return math.fsum(abs(sums[b] / counts[b] - hits[b] / counts[b]) * counts[b] for b in range(bins) if counts[b]) \
        / len(correct)


def reliability(probabilities: Sequence[float], correct: Sequence[bool], bins: int = 10) -> list[dict[str, float]]:
    """Per non-empty bin: its range, mean predicted probability, accuracy and count."""
    table = []
    for b in range(bins):
        members = [(p, y) for p, y in zip(probabilities, correct, strict=True) if min(int(p * bins), bins - 1) == b]
        if members:
            table.append({"low": b / bins, "high": (b + 1) / bins, "count": len(members),
                          "mean_probability": math.fsum(p for p, _ in members) / len(members),
                          "accuracy": sum(y for _, y in members) / len(members)})
    return table


def coverage_curve(scores: Sequence[float], correct: Sequence[bool]) -> list[dict[str, float]]:
    """Accuracy when answering only the most confident share of the responses."""
    ranked = [y for _, y in sorted(zip(scores, correct, strict=True), key=lambda pair: -pair[0])]
    curve = []
    for coverage in COVERAGES:
        answered = ranked[:max(1, math.ceil(coverage * len(ranked)))]
        curve.append({"coverage": coverage, "answered": len(answered), "accuracy": sum(answered) / len(answered)})
    return curve


def flag_threshold(raw: Sequence[float], correct: Sequence[bool], sign: int,
                   target_precision: float) -> dict[str, Any]:
    """The threshold (in the figure's own units) that flags the most responses while at least
    ``target_precision`` of the flagged ones are wrong. Flagged: less confident than the threshold
    (figure < threshold when higher is more confident, > when lower is)."""
    best: dict[str, Any] = {"threshold": None, "flagged": 0, "precision": None}
    for candidate in sorted(set(raw)):
        flagged = [y for v, y in zip(raw, correct, strict=True) if (v < candidate if sign > 0 else v > candidate)]
        if flagged:
            precision = 1 - sum(flagged) / len(flagged)
            if precision >= target_precision and len(flagged) > best["flagged"]:
                best = {"threshold": candidate, "flagged": len(flagged), "precision": precision}
    return best


def evaluate(labelled: Sequence[Labelled], target_precision: float = 0.9) -> dict[str, Any]:
    correct_all = [item.correct for item in labelled]
    result: dict[str, Any] = {
        "labelled": len(labelled),
        "accuracy": sum(correct_all) / len(labelled) if labelled else None,
        "target_precision": target_precision,
        "metrics": {},
    }
    for name, sign in SIGNS.items():
        items = [item for item in labelled if name in item.figures]
        if not items:
            continue
        raw = [item.figures[name] for item in items]
        correct = [item.correct for item in items]
        oriented = [sign * v for v in raw]
        entry: dict[str, Any] = {"responses": len(items), "auroc": auroc(oriented, correct),
                                 "coverage": coverage_curve(oriented, correct),
                                 "flag": flag_threshold(raw, correct, sign, target_precision)}
        if name in PROBABILITIES:
            entry.update(brier=brier(raw, correct), ece=ece(raw, correct), reliability=reliability(raw, correct))
        result["metrics"][name] = entry
    return result


def calibrate(labelled: Sequence[Labelled], metric: str = DEFAULT_METRIC) -> CalibrationMap:
    """The isotonic calibration map of ``metric`` on the labelled responses that have it
    (``CalibrationError`` when there are too few or only one class)."""
    items = [item for item in labelled if metric in item.figures]
    return fit_isotonic([item.figures[metric] for item in items], [item.correct for item in items],
                        metric=metric, increasing=SIGNS[metric] > 0)


def _cell(value: float | None, width: int, spec: str) -> str:
    return f"{'–' if value is None else format(value, spec):>{width}}"


def table(result: dict[str, Any]) -> str:
    """The terminal table: one row per figure."""
    accuracy = result["accuracy"]
    lines = [f"{result['labelled']} labelled responses, accuracy {_cell(accuracy, 0, '.1%')}", "",
             f"{'figure':<24}{'AUROC':>7}{'Brier':>8}{'ECE':>7}{'acc@50%':>9}   flagged "
             f"(precision ≥ {result['target_precision']:.2f})"]
    for name, m in result["metrics"].items():
        half = next(point["accuracy"] for point in m["coverage"] if point["coverage"] == 0.5)
        flag = m["flag"]
        flagged = "no threshold reaches it" if flag["threshold"] is None else (
            f"{'<' if SIGNS[name] > 0 else '>'} {flag['threshold']:.4g}: {flag['flagged']} "
            f"response{'' if flag['flagged'] == 1 else 's'}")
        lines.append(f"{name:<24}{_cell(m['auroc'], 7, '.3f')}{_cell(m.get('brier'), 8, '.3f')}"
                     f"{_cell(m.get('ece'), 7, '.3f')}{_cell(half, 9, '.1%')}   {flagged}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    from observability.evaluation.html import write_html
    from observability.exporters._jsonl import RecordFileError, read_records

    parser = argparse.ArgumentParser(prog=prog, description="Which confidence figure separates right answers "
                                     "from wrong ones: AUROC, Brier, ECE, accuracy-coverage and thresholds.")
    parser.add_argument("records", type=Path, help="a record file (record_to=)")
    parser.add_argument("--labels", type=Path, required=True,
                        help='JSON lines: {"run_id": "...", "correct": true|false[, "choice_index": 0]}')
    parser.add_argument("--target-precision", type=float, default=0.9, metavar="P",
                        help="share of wrong answers the flagged set must reach (default 0.9)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the result as JSON")
    parser.add_argument("--html", type=Path, metavar="OUT", help="also write a page with the reliability "
                        "diagram and the accuracy-coverage curve")
    parser.add_argument("--calibration", type=Path, metavar="OUT", help="also fit a calibration map (isotonic "
                        "regression of right/wrong on one figure) and write it as JSON, for "
                        "ConfidenceCallbackHandler(calibration=OUT)")
    parser.add_argument("--calibration-metric", choices=tuple(SIGNS), metavar="FIGURE",
                        help=f"the figure the map reads (default {DEFAULT_METRIC}); one of {', '.join(SIGNS)}")
    args = parser.parse_args(argv)
    if not 0.0 < args.target_precision <= 1.0:
        parser.error("--target-precision must be in (0, 1]")
    if args.calibration_metric is not None and args.calibration is None:
        parser.error("--calibration-metric needs --calibration OUT.json (where to write the map)")
    try:
        labelled = join(read_records(args.records), read_labels(args.labels))
    except (OSError, RecordFileError, LabelFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not labelled:
        print("error: no response has both a label and a confidence report (do the run ids match?)",
              file=sys.stderr)
        return 1
    calibration = None
    if args.calibration is not None:
        try:
            calibration = calibrate(labelled, args.calibration_metric or DEFAULT_METRIC)
        except CalibrationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    result = evaluate(labelled, args.target_precision)
    print(table(result))
    if calibration is not None:
        try:
            write_calibration(calibration, args.calibration)  # checked first: what is written loads
        except CalibrationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        result["calibration"] = calibration.to_json()
        print(f"\ncalibration map of {calibration.metric} ({len(calibration.points)} points, fitted on "
              f"{calibration.labels} labelled responses) written to {args.calibration}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.html:
        write_html(result, table(result), args.html, calibration)
    return 0
