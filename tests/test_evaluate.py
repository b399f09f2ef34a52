"""`python -m observability evaluate`: AUROC, Brier and ECE against independent reference
computations written here (pairwise AUROC, loops over bins), on random data and on real model
records; label files with errors name the line; ``--calibration`` writes the isotonic map that the reference in
test_calibration.py computes from the answers' logprobs."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from observability import ConfidenceCallbackHandler
from observability.evaluation.evaluate import SIGNS, auroc, brier, ece, evaluate, join, read_labels
from observability.exporters._jsonl import read_records
from observability.testing import FakeLogprobChatModel
from tests.fuzzing import fuzz
from tests.test_calibration import reference_points


def reference_auroc(scores: list[float], correct: list[bool]) -> float | None:
    right = [s for s, y in zip(scores, correct, strict=True) if y]
    wrong = [s for s, y in zip(scores, correct, strict=True) if not y]
    if not right or not wrong:
        return None
    wins = sum(1.0 if r > w else 0.5 if r == w else 0.0 for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def reference_ece(p: list[float], y: list[bool]) -> float:
    total = 0.0
    for b in range(10):
        low, high = b / 10, (b + 1) / 10
        members = [(pi, yi) for pi, yi in zip(p, y, strict=True) if low <= pi < high or (b == 9 and pi == 1.0)]
        if members:
            confidence = sum(pi for pi, _ in members) / len(members)
            accuracy = sum(yi for _, yi in members) / len(members)
            total += abs(confidence - accuracy) * len(members)
    return total / len(p)


scores = st.lists(st.tuples(st.sampled_from([0.0, 0.25, 0.5, 0.9, 1.0]) | st.floats(0.0, 1.0), st.booleans()),
                  min_size=1, max_size=60)


@fuzz(300)
@given(scores)
def test_auroc_brier_and_ece_equal_the_reference(pairs: list[tuple[float, bool]]) -> None:
    p = [s for s, _ in pairs]
    y = [c for _, c in pairs]
    expected = reference_auroc(p, y)
    got = auroc(p, y)
    assert (got is None) == (expected is None)
    if expected is not None and got is not None:
        assert math.isclose(got, expected, abs_tol=1e-9)
    assert math.isclose(brier(p, y), sum((pi - yi) ** 2 for pi, yi in pairs) / len(pairs), abs_tol=1e-9)
    assert math.isclose(ece(p, y), reference_ece(p, y), abs_tol=1e-9)


def test_hand_computed_cases() -> None:
    assert auroc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert auroc([0.1, 0.8, 0.9], [True, True, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5  # a tie counts half
    assert brier([1.0, 0.0], [True, True]) == 0.5
    assert ece([1.0, 1.0], [True, False]) == 0.5  # 1.0 falls in the last bin


@pytest.mark.parametrize(("line", "message"), [
    pytest.param("not json", "not JSON", id="not-json"),
    pytest.param('{"correct": true}', "expected", id="no-run-id"),
    pytest.param('{"run_id": "a", "correct": "yes"}', "must be true or false", id="not-bool"),
    pytest.param('{"run_id": "a", "correct": true, "choice_index": -1}', "non-negative", id="bad-choice"),
])
def test_a_bad_label_line_is_named(tmp_path: Path, line: str, message: str) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"run_id": "x", "correct": true}\n\n' + line + "\n", encoding="utf-8")
    records = tmp_path / "records.jsonl"
    records.write_text("", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "observability", "evaluate", str(records), "--labels", str(labels)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"{labels}:3: " in result.stderr and message in result.stderr


QUESTIONS = [("France", "Paris"), ("Japan", "Tokyo"), ("Australia", "Canberra"), ("Canada", "Ottawa"),
             ("Kenya", "Nairobi"), ("Mongolia", "Ulaanbaatar"), ("Nepal", "Kathmandu"), ("Peru", "Lima"),
             ("Nigeria", "Abuja"), ("Turkey", "Ankara"), ("Iceland", "Reykjavik"), ("Chile", "Santiago")]


@pytest.mark.real_model
def test_evaluate_on_real_records_matches_independent_computations(tmp_path: Path, chat_model: Any) -> None:
    records_path, labels_path, out = tmp_path / "records.jsonl", tmp_path / "labels.jsonl", tmp_path / "result.json"
    handler = ConfidenceCallbackHandler(exporters=(), record_to=records_path)
    model = chat_model(logprobs=True, top_logprobs=5, max_tokens=12)
    model.batch([f"What is the capital of {country}? Answer with the city name only." for country, _ in QUESTIONS],
                [{"callbacks": [handler], "metadata": {"city": city}} for _, city in QUESTIONS])
    records = read_records(records_path)
    assert len(records) == len(QUESTIONS)
    with labels_path.open("w", encoding="utf-8") as labels:
        for record in records:
            correct = str(record.start.metadata["city"]).lower() in (record.text or "").lower()
            labels.write(json.dumps({"run_id": str(record.start.run_id), "correct": correct}) + "\n")
    html = tmp_path / "evaluation.html"
    result = subprocess.run([sys.executable, "-m", "observability", "evaluate", str(records_path), "--labels",
                             str(labels_path), "--json", str(out), "--html", str(html)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "AUROC" in result.stdout and "<svg" in html.read_text(encoding="utf-8")
    got = json.loads(out.read_text(encoding="utf-8"))
    labelled = read_labels(labels_path)
    y = [labelled[(str(r.start.run_id), 0)] for r in records]
    assert got["labelled"] == len(records) and math.isclose(got["accuracy"], sum(y) / len(y))
    for name, sign in SIGNS.items():
        raw = [getattr(r.report, name) for r in records]
        expected = reference_auroc([sign * v for v in raw], y)
        if expected is None:
            assert got["metrics"][name]["auroc"] is None
        else:
            assert math.isclose(got["metrics"][name]["auroc"], expected, abs_tol=1e-9), name
    for name in ("sequence_probability", "min_token_probability"):
        raw = [getattr(r.report, name) for r in records]
        assert math.isclose(got["metrics"][name]["brier"], sum((p - t) ** 2 for p, t in zip(raw, y, strict=True))
                            / len(y), abs_tol=1e-9)
        assert math.isclose(got["metrics"][name]["ece"], reference_ece(raw, y), abs_tol=1e-9)
    assert evaluate(join(records, labelled))["metrics"].keys() == got["metrics"].keys()



def run_evaluate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "observability", "evaluate", *args], capture_output=True, text=True,
                          timeout=120)


FIGURES: dict[str, Any] = {
    "sequence_probability": lambda lps: math.exp(sum(lps) / len(lps)),
    "perplexity": lambda lps: math.exp(-sum(lps) / len(lps)),
    "min_token_probability": lambda lps: math.exp(min(lps)),
}
"""Each figure from an answer's token logprobs, computed here."""


@pytest.fixture(scope="module")
def labelled_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[tuple[list[float], bool]]]:
    """30 answers of a fake model through the handler into a record file, each labelled right with
    the probability of its sequence probability (seeded): (records, labels, [(logprobs, right)])."""
    folder = tmp_path_factory.mktemp("calibration")
    records_path, labels_path = folder / "records.jsonl", folder / "labels.jsonl"
    handler = ConfidenceCallbackHandler(exporters=(), record_to=records_path)
    chance = random.Random(19)
    answers = []
    with labels_path.open("w", encoding="utf-8") as labels:
        for _ in range(30):
            logprobs = [round(chance.uniform(-2.0, 0.0), 3) for _ in range(3)]
            right = chance.random() < FIGURES["sequence_probability"](logprobs)
            seen: list[Any] = []
            handler.on_report = seen.append
            model = FakeLogprobChatModel(tokens=["a", "b", "c"], token_logprobs=logprobs)
            model.invoke("q", config={"callbacks": [handler]})
            labels.write(json.dumps({"run_id": str(seen[0].start.run_id), "correct": right}) + "\n")
            answers.append((logprobs, right))
    assert 5 < sum(right for _, right in answers) < 25  # both classes, well mixed
    return records_path, labels_path, answers


@pytest.mark.parametrize("metric", [None, "perplexity", "min_token_probability"])
def test_calibration_option_writes_the_reference_isotonic_map(
        tmp_path: Path, labelled_files: tuple[Path, Path, list[tuple[list[float], bool]]], metric: str | None) -> None:
    records_path, labels_path, answers = labelled_files
    out, html = tmp_path / "calibration.json", tmp_path / "evaluation.html"
    chosen = ["--calibration-metric", metric] if metric else []
    result = run_evaluate(str(records_path), "--labels", str(labels_path), "--calibration", str(out),
                          "--html", str(html), *chosen)
    assert result.returncode == 0, result.stderr
    assert f"written to {out}" in result.stdout
    name = metric or "sequence_probability"
    figures = [FIGURES[name](logprobs) for logprobs, _ in answers]
    correct = [right for _, right in answers]
    written = json.loads(out.read_text(encoding="utf-8"))
    assert (written["metric"], written["labels"], written["correct"]) == (name, 30, sum(correct))
    assert written["orientation"] == ("decreasing" if SIGNS[name] < 0 else "increasing")
    got = [(float(x), float(p)) for x, p in written["points"]]
    expected = reference_points(figures, correct, SIGNS[name] > 0)
    assert len(got) == len(expected)
    for (gx, gp), (ex, ep) in zip(got, expected, strict=True):  # figures recomputed here: 1e-9, not exact
        assert math.isclose(gx, ex, rel_tol=1e-9) and math.isclose(gp, ep, rel_tol=1e-12)
    page = html.read_text(encoding="utf-8")
    drawn = f"Reliability: {name}, with the calibration map" in page
    assert drawn == (name != "perplexity")  # drawn on the reliability diagram of a probability figure


def test_calibration_refuses_too_few_labels_and_bad_options(
        tmp_path: Path, labelled_files: tuple[Path, Path, list[tuple[list[float], bool]]]) -> None:
    records_path, labels_path, _ = labelled_files
    few = tmp_path / "labels.jsonl"
    few.write_text("".join(labels_path.read_text(encoding="utf-8").splitlines(keepends=True)[:10]), encoding="utf-8")
    out = tmp_path / "calibration.json"
    result = run_evaluate(str(records_path), "--labels", str(few), "--calibration", str(out))
    assert result.returncode == 1 and "only 10 labelled responses" in result.stderr and "at least 20" in result.stderr
    assert not out.exists()
    result = run_evaluate(str(records_path), "--labels", str(few), "--calibration-metric", "perplexity")
    assert result.returncode == 2 and "--calibration-metric needs --calibration OUT.json" in result.stderr
    result = run_evaluate(str(records_path), "--labels", str(few), "--calibration", str(out),
                          "--calibration-metric", "length")
    assert result.returncode == 2 and "invalid choice: 'length'" in result.stderr


def test_a_rerun_that_fits_the_same_map_leaves_the_files_unchanged(tmp_path: Path) -> None:
    """Issue 30: `make evaluate` rewrote result.json and calibration.json with a new fitted_at only."""
    from benchmarks.evaluate import keep_when_only_fit_time_changed

    old_map = {"metric": "sequence_probability", "points": [[0.2, 0.1], [0.8, 0.9]],
               "fitted_at": "2026-11-27T13:01:34Z"}
    same, moved = tmp_path / "calibration.json", tmp_path / "result.json"
    before = {same: json.dumps(old_map, indent=2).encode(),
              moved: json.dumps({"accuracy": 0.8, "calibration": old_map}, indent=2).encode()}
    same.write_text(json.dumps({**old_map, "fitted_at": "2026-12-07T20:00:00Z"}, indent=2))
    changed = {"accuracy": 0.75, "calibration": {**old_map, "fitted_at": "2026-12-07T20:00:00Z"}}
    moved.write_text(json.dumps(changed, indent=2))
    assert keep_when_only_fit_time_changed(before) == [same]
    assert same.read_bytes() == before[same]  # the old bytes, old fitted_at included
    assert json.loads(moved.read_text()) == changed  # a real change keeps the new fit time


def test_one_response_is_not_plural() -> None:
    from observability.evaluation.evaluate import table
    from observability.evaluation.html import reliability_svg

    result = {"labelled": 3, "accuracy": 2 / 3, "target_precision": 0.9, "metrics": {
        "sequence_probability": {"auroc": 1.0, "brier": 0.1, "ece": 0.1,
                                 "coverage": [{"coverage": 0.5, "accuracy": 1.0}],
                                 "flag": {"threshold": 0.4, "flagged": 1}}}}
    assert table(result).splitlines()[-1].endswith("< 0.4: 1 response")
    bins = [{"low": 0.0, "high": 0.1, "count": 1, "mean_probability": 0.05, "accuracy": 0.0},
            {"low": 0.9, "high": 1.0, "count": 2, "mean_probability": 0.95, "accuracy": 1.0}]
    page = reliability_svg("sequence_probability", bins)
    assert "0.0–0.1: 1 response, mean p" in page and "0.9–1.0: 2 responses, mean p" in page


def test_calibrating_on_perplexity_with_impossible_answers_writes_a_map_that_loads(tmp_path: Path) -> None:
    """Five one-token answers of logprob -inf have the largest perplexity the handler records
    (finite, near the float maximum); their pooled mean used to overflow into a point (inf, 0.0)."""
    records_path, labels_path, out = tmp_path / "records.jsonl", tmp_path / "labels.jsonl", tmp_path / "map.json"
    handler = ConfidenceCallbackHandler(exporters=(), record_to=records_path)
    perplexities = []
    with labels_path.open("w", encoding="utf-8") as labels:
        for i in range(25):
            logprobs = [-math.inf] if i < 5 else [-0.1 * i]
            seen: list[Any] = []
            handler.on_report = seen.append
            FakeLogprobChatModel(tokens=["a"], token_logprobs=logprobs).invoke("q", config={"callbacks": [handler]})
            perplexities.append(seen[0].report.perplexity)
            labels.write(json.dumps({"run_id": str(seen[0].start.run_id), "correct": i >= 5 and i % 2 == 1}) + "\n")
    assert all(math.isfinite(p) and p > 1e307 for p in perplexities[:5])
    result = run_evaluate(str(records_path), "--labels", str(labels_path), "--calibration", str(out),
                          "--calibration-metric", "perplexity")
    assert result.returncode == 0, result.stderr
    loaded = ConfidenceCallbackHandler(exporters=(), calibration=out).calibration
    assert loaded is not None
    figure, probability = loaded.points[-1]  # the impossible answers' block (with the wrong answers pooled in)
    assert math.isfinite(figure) and 1e307 < figure <= perplexities[0] and probability == 0.0
