"""The evaluation as a self-contained page: a reliability diagram per probability figure and the
accuracy–coverage curve of every figure, as inline SVG (no script, no external file)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from observability.core.calibration import CalibrationMap

SIZE = 260
PAD = 30
COLOURS = ("#1b6ca8", "#c2410c", "#15803d", "#7e22ce", "#a16207", "#be123c")


def _xy(x: float, y: float) -> str:
    return f"{PAD + x * SIZE:.1f},{PAD + (1 - y) * SIZE:.1f}"


def _frame(title: str, x_label: str, y_label: str, body: str) -> str:
    ticks = "".join(f'<text x="{PAD + t * SIZE:.0f}" y="{PAD + SIZE + 14}" text-anchor="middle">{t:.1f}</text>'
                    f'<text x="{PAD - 4}" y="{PAD + (1 - t) * SIZE + 4:.0f}" text-anchor="end">{t:.1f}</text>'
                    for t in (0.0, 0.5, 1.0))
    return (f'<figure><figcaption>{html.escape(title)}</figcaption>'
            f'<svg width="{SIZE + 2 * PAD}" height="{SIZE + 2 * PAD + 10}" role="img" '
            f'aria-label="{html.escape(title)}" font-size="11" font-family="sans-serif">'
            f'<rect x="{PAD}" y="{PAD}" width="{SIZE}" height="{SIZE}" fill="none" stroke="#888"/>{ticks}'
            f'<text x="{PAD + SIZE / 2}" y="{PAD + SIZE + 28}" text-anchor="middle">{x_label}</text>'
            f'<text x="10" y="{PAD + SIZE / 2}" transform="rotate(-90 10 {PAD + SIZE / 2})" '
            f'text-anchor="middle">{y_label}</text>{body}</svg></figure>')


def reliability_svg(name: str, bins: list[dict[str, float]], calibration: CalibrationMap | None = None) -> str:
    """Accuracy per bin against the diagonal; with a calibration map of this figure, its curve too."""
    diagonal = f'<polyline points="{_xy(0, 0)} {_xy(1, 1)}" stroke="#bbb" stroke-dasharray="4" fill="none"/>'
    title = f"Reliability: {name}"
    if calibration is not None and calibration.metric == name:
        title += ", with the calibration map (line)"
        xs = [0.0, *(x for x, _ in calibration.points if 0.0 < x < 1.0), 1.0]
        curve = " ".join(_xy(x, calibration(x)) for x in xs)
        diagonal += (f'<polyline points="{curve}" stroke="#c2410c" stroke-width="2" fill="none">'
                     f'<title>calibration map ({len(calibration.points)} points)</title></polyline>')
    bars = "".join(
        f'<rect x="{PAD + b["low"] * SIZE + 1:.1f}" y="{PAD + (1 - b["accuracy"]) * SIZE:.1f}" '
        f'width="{(b["high"] - b["low"]) * SIZE - 2:.1f}" height="{b["accuracy"] * SIZE:.1f}" fill="#1b6ca8" '
        f'fill-opacity="0.7"><title>{b["low"]:.1f}–{b["high"]:.1f}: {b["count"]:.0f} '
        f'response{"" if b["count"] == 1 else "s"}, mean p '
        f'{b["mean_probability"]:.2f}, accuracy {b["accuracy"]:.0%}</title></rect>' for b in bins)
    return _frame(title, name.replace("_", " "), "accuracy", diagonal + bars)


def coverage_svg(metrics: dict[str, Any]) -> str:
    lines = []
    for (name, m), colour in zip(metrics.items(), COLOURS, strict=False):
        points = " ".join(_xy(p["coverage"], p["accuracy"]) for p in m["coverage"])
        lines.append(f'<polyline points="{points}" stroke="{colour}" fill="none" stroke-width="2">'
                     f'<title>{html.escape(name)}</title></polyline>')
    legend = "".join(f'<li style="color:{colour}">{html.escape(name)}</li>'
                     for name, colour in zip(metrics, COLOURS, strict=False))
    return _frame("Accuracy when answering only the most confident share", "coverage", "accuracy",
                  "".join(lines)) + f"<ul>{legend}</ul>"


def write_html(result: dict[str, Any], summary: str, path: Path, calibration: CalibrationMap | None = None) -> None:
    """The page: ``summary`` (the terminal table) and a reliability diagram for each figure that is
    a probability (those ``evaluate`` gave a ``reliability`` list), then the coverage curves."""
    figures = "".join(reliability_svg(name, metric["reliability"], calibration)
                      for name, metric in result["metrics"].items() if "reliability" in metric)
    page = (f"<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Confidence evaluation</title>"
            f"<style>body{{font-family:sans-serif;margin:2em;color:#1f2933}} figure{{display:inline-block;"
            f"margin:0 2em 1em 0}} pre{{background:#f4f6f8;padding:1em}}</style>"
            f"<h1>Which figure predicts a wrong answer</h1><pre>{html.escape(summary)}</pre>"
            f"{figures}{coverage_svg(result['metrics'])}</html>\n")
    path.write_text(page, encoding="utf-8")
