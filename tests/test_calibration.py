"""The calibration map: the isotonic fit against an independent reference (the min-max formula of
isotonic regression, not pool-adjacent-violators), monotone and clamped, the file round trip and
its errors, and the handler exporting the mapped value in Prometheus, OpenTelemetry, the span and
the record file, each expected value computed here from the tokens' logprobs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from observability import ConfidenceCallbackHandler, ConfidenceReport, ResponseRecord
from observability.attach.config import NO_CALIBRATION, OBSERVABILITY_CALIBRATION, read_env
from observability.core.calibration import (
    MIN_LABELS,
    CalibrationError,
    CalibrationMap,
    fit_isotonic,
    load_calibration,
    write_calibration,
)
from observability.exporters._jsonl import read_records
from observability.testing import FakeLogprobChatModel, InMemoryTelemetry
from tests.fuzzing import fuzz

ROOT = Path(__file__).resolve().parent.parent


def reference_points(figures: Sequence[float], correct: Sequence[bool],
                     increasing: bool = True) -> list[tuple[float, float]]:
    """Isotonic regression by its min-max formula over the tied groups, ordered by confidence:
    fit(i) = max over j <= i of min over k >= i of (right answers in groups j..k) / (responses in them);
    a run of groups with one fitted value is one point at their responses' mean figure."""
    groups: dict[float, list[int]] = {}
    for x, y in zip(figures, correct, strict=True):
        groups.setdefault(x, [0, 0])
        groups[x][0] += int(y)
        groups[x][1] += 1
    order = sorted(groups, reverse=not increasing)
    hits = [groups[x][0] for x in order]
    counts = [groups[x][1] for x in order]
    n = len(order)
    fitted = [max(min(sum(hits[j:k + 1]) / sum(counts[j:k + 1]) for k in range(i, n)) for j in range(i + 1))
              for i in range(n)]
    points: list[tuple[float, float]] = []
    i = 0
    while i < n:
        j = i
        while j + 1 < n and fitted[j + 1] == fitted[i]:
            j += 1
        members = range(i, j + 1)
        mean = math.fsum(order[m] * counts[m] for m in members) / sum(counts[m] for m in members)
        points.append((mean, fitted[i]))
        i = j + 1
    return sorted(points)


def reference_apply(points: Sequence[tuple[float, float]], x: float) -> float:
    """Linear between the neighbouring points, the end point's value beyond them."""
    if x <= points[0][0]:
        return points[0][1]
    if x >= points[-1][0]:
        return points[-1][1]
    for (x0, p0), (x1, p1) in pairwise(points):
        if x0 <= x <= x1:
            return p0 + (p1 - p0) * (x - x0) / (x1 - x0)
    raise AssertionError("unreachable")


def assert_points_close(got: Sequence[tuple[float, float]], expected: Sequence[tuple[float, float]]) -> None:
    assert len(got) == len(expected), (got, expected)
    for (gx, gp), (ex, ep) in zip(got, expected, strict=True):
        assert math.isclose(gx, ex, rel_tol=1e-12, abs_tol=1e-12) and gp == ep, (got, expected)


labelled = st.lists(st.tuples(st.sampled_from([0.1, 0.3, 0.5, 0.9]) | st.floats(0.0, 5.0), st.booleans()),
                    min_size=2, max_size=40).filter(lambda pairs: 0 < sum(y for _, y in pairs) < len(pairs))


@fuzz(300)
@given(labelled, st.booleans())
def test_the_fit_equals_the_min_max_reference(pairs: list[tuple[float, bool]], increasing: bool) -> None:
    figures, correct = [x for x, _ in pairs], [y for _, y in pairs]
    fitted = fit_isotonic(figures, correct, metric="perplexity", increasing=increasing, min_labels=2)
    assert_points_close(fitted.points, reference_points(figures, correct, increasing))
    assert (fitted.labels, fitted.correct) == (len(pairs), sum(correct))
    assert fitted.orientation == ("increasing" if increasing else "decreasing")


@fuzz(200)
@given(labelled, st.booleans(), st.lists(st.floats(-1.0, 6.0), min_size=2, max_size=30))
def test_the_map_is_monotone_and_clamped(pairs: list[tuple[float, bool]], increasing: bool,
                                         queries: list[float]) -> None:
    fitted = fit_isotonic([x for x, _ in pairs], [y for _, y in pairs], increasing=increasing, min_labels=2)
    values = [fitted(q) for q in sorted(queries)]
    steps = [b - a for a, b in pairwise(values)]
    assert all(s >= -1e-12 for s in steps) if increasing else all(s <= 1e-12 for s in steps)
    low, high = min(p for _, p in fitted.points), max(p for _, p in fitted.points)
    assert all(low - 1e-12 <= v <= high + 1e-12 for v in values)
    for q in queries:
        assert math.isclose(fitted(q), reference_apply(fitted.points, q), abs_tol=1e-12)


def test_hand_computed_fit_and_interpolation() -> None:
    # Sorted by figure: 0.1 wrong, 0.2 right, 0.3 wrong -> the last two pool (0.5 at 0.25); 0.4, 0.5 right.
    fitted = fit_isotonic([0.3, 0.1, 0.5, 0.2, 0.4], [False, False, True, True, True], min_labels=5)
    assert fitted.points == ((0.1, 0.0), (0.25, 0.5), (0.45, 1.0))
    assert fitted(0.0) == 0.0 and fitted(0.9) == 1.0  # clamped
    assert math.isclose(fitted(0.175), 0.25) and math.isclose(fitted(0.35), 0.75)
    # Ties are one block: two answers at 0.5, one right, one wrong.
    tied = fit_isotonic([0.5, 0.5, 0.9], [True, False, True], min_labels=3)
    assert tied.points == ((0.5, 0.5), (0.9, 1.0))


def test_too_few_labels_or_one_class_are_refused() -> None:
    with pytest.raises(CalibrationError, match=rf"only {MIN_LABELS - 1} labelled responses .* at least {MIN_LABELS}"):
        fit_isotonic([0.5] * (MIN_LABELS - 1), [True, False] * 9 + [True])
    with pytest.raises(CalibrationError, match=r"all 30 labelled responses are right; .* both right and wrong"):
        fit_isotonic([i / 30 for i in range(30)], [True] * 30)
    with pytest.raises(CalibrationError, match="cannot calibrate on 'answer_length'"):
        fit_isotonic([0.5] * 30, [True, False] * 15, metric="answer_length")
    with pytest.raises(CalibrationError, match="not a finite number"):
        fit_isotonic([math.nan] + [0.5] * 29, [True, False] * 15)


def test_the_file_round_trips_and_reads_as_documented(tmp_path: Path) -> None:
    fitted = fit_isotonic([i / 40 for i in range(40)], [i % 3 != 0 or i > 30 for i in range(40)],
                          metric="mean_token_entropy", increasing=False)
    path = tmp_path / "calibration.json"
    write_calibration(fitted, path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == {"format": "langchain-confidence.calibration", "version": 1, "method": "isotonic",
                    "metric": "mean_token_entropy", "orientation": "decreasing", "labels": 40,
                    "correct": sum(i % 3 != 0 or i > 30 for i in range(40)), "fitted_at": fitted.fitted_at,
                    "points": [list(point) for point in fitted.points]}
    assert load_calibration(path) == load_calibration(str(path)) == fitted
    assert load_calibration(fitted) is fitted


GOOD: dict[str, Any] = {"format": "langchain-confidence.calibration", "version": 1, "method": "isotonic",
                        "metric": "sequence_probability", "orientation": "increasing", "labels": 30, "correct": 20,
                        "fitted_at": "2026-11-27T12:00:00Z", "points": [[0.2, 0.1], [0.6, 0.7], [0.9, 0.95]]}


@pytest.mark.parametrize(("change", "message"), [
    pytest.param({"format": "something"}, "not a calibration map", id="format"),
    pytest.param({"version": 2}, "unsupported version 2", id="version"),
    pytest.param({"method": "platt"}, "unknown method 'platt'", id="method"),
    pytest.param({"metric": "length"}, "unknown metric 'length'", id="metric"),
    pytest.param({"orientation": "up"}, '"orientation" must be', id="orientation"),
    pytest.param({"points": []}, '"points" must be a non-empty list', id="no-points"),
    pytest.param({"points": [[0.2, 0.1], [0.2, 0.3]]}, "strictly ascending", id="not-ascending"),
    pytest.param({"points": [[0.2, 0.5], [0.6, 0.1]]}, "monotone (increasing)", id="not-monotone"),
    pytest.param({"points": [[0.2, 1.5]]}, "outside [0, 1]", id="not-a-probability"),
    pytest.param({"points": [[0.2, None]]}, "points[0] is not a [figure, probability] pair", id="null"),
    pytest.param({"points": [[0.2, math.inf]]}, "points[0] is not a [figure, probability] pair", id="infinite"),
    pytest.param({"correct": 40}, "correct <= labels", id="counts"),
    pytest.param({"fitted_at": None}, '"fitted_at"', id="fitted-at"),
])
def test_a_bad_file_is_refused_naming_the_problem_and_the_fix(tmp_path: Path, change: dict[str, Any],
                                                               message: str) -> None:
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({**GOOD, **change}), encoding="utf-8")
    with pytest.raises(CalibrationError) as raised:
        ConfidenceCallbackHandler(exporters=(), calibration=path)
    assert f"calibration file {path}: " in str(raised.value) and message in str(raised.value)
    assert "--calibration OUT.json" in str(raised.value)  # the fix


def test_a_missing_or_unreadable_path_or_a_wrong_type_raises_at_once(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="does not exist; write one with: python -m observability evaluate"):
        ConfidenceCallbackHandler(exporters=(), calibration=tmp_path / "nothing.json")
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CalibrationError, match=r"broken\.json is not JSON"):
        ConfidenceCallbackHandler(exporters=(), calibration=tmp_path / "broken.json")
    with pytest.raises(CalibrationError, match="cannot be read"):
        ConfidenceCallbackHandler(exporters=(), calibration=tmp_path)  # a directory
    unsorted = CalibrationMap("sequence_probability", "increasing", ((0.6, 0.5), (0.2, 0.1)), 30, 20, "now")
    with pytest.raises(CalibrationError, match=r"calibration map: points\[1\]: figures must be strictly ascending"):
        ConfidenceCallbackHandler(exporters=(), calibration=unsorted)
    with pytest.raises(TypeError, match="file path or a CalibrationMap"):
        ConfidenceCallbackHandler(exporters=(), calibration=0.5)  # type: ignore[arg-type]


# ---- the handler and the exporters -----------------------------------------------------------

ANSWERS = [[-0.05, -0.1], [-0.4, -0.5], [-1.5, -2.0], [-0.2, -0.3]]
"""Token logprobs of four answers: sequence probabilities (exp of the mean) 0.93, 0.64, 0.17, 0.78,
above, between and below the map's points."""
POINTS = ((0.3, 0.05), (0.6, 0.5), (0.9, 0.97))


def answer_all(handler: ConfidenceCallbackHandler, answers: list[list[float]] = ANSWERS) -> list[ResponseRecord]:
    records: list[ResponseRecord] = []
    handler.on_report = records.append
    for logprobs in answers:
        FakeLogprobChatModel(tokens=["a", "b"], token_logprobs=logprobs).invoke("hi", config={"callbacks": [handler]})
    return records


def histogram_points(telemetry: InMemoryTelemetry, name: str) -> list[Any]:
    data = telemetry.metrics()
    return [] if data is None else [p for rm in data.resource_metrics for sm in rm.scope_metrics
                                    for m in sm.metrics if m.name == name for p in m.data.data_points]


@pytest.mark.parametrize(("metric", "orientation", "figure"), [
    pytest.param("sequence_probability", "increasing", lambda lps: math.exp(sum(lps) / len(lps)), id="sequence"),
    pytest.param("perplexity", "decreasing", lambda lps: math.exp(-sum(lps) / len(lps)), id="perplexity"),
])
def test_the_handler_exports_the_map_applied_to_the_raw_figure(telemetry: InMemoryTelemetry, tmp_path: Path,
                                                              metric: str, orientation: str, figure: Any) -> None:
    points = POINTS if orientation == "increasing" else tuple((1 / x, p) for x, p in reversed(POINTS))
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({**GOOD, "metric": metric, "orientation": orientation,
                                "points": [list(p) for p in points]}), encoding="utf-8")
    records_path = tmp_path / "records.jsonl"
    handler = ConfidenceCallbackHandler(exporters=telemetry.exporters(), calibration=path, record_to=records_path)
    records = answer_all(handler)
    expected = [reference_apply(points, figure(lps)) for lps in ANSWERS]
    assert len({round(e, 6) for e in expected}) == 4 and not handler.errors  # two clamped, two interpolated
    for record, value in zip(records, expected, strict=True):
        assert record.calibrated_probability is not None
        assert math.isclose(record.calibrated_probability, value, abs_tol=1e-12)

    name = "llm_response_calibrated_probability"
    labels = {"provider": "fake", "model": "fake-logprobs"}
    assert telemetry.sample(f"{name}_count", **labels) == 4
    assert math.isclose(telemetry.sample(f"{name}_sum", **labels) or 0.0, math.fsum(expected), abs_tol=1e-12)
    for bound in (0.05, 0.5, 0.9, 0.95, 1.0):
        assert telemetry.sample(f"{name}_bucket", le=str(bound), **labels) == sum(v <= bound for v in expected)
    [point] = histogram_points(telemetry, "llm.response.calibrated_probability")
    assert point.count == 4 and math.isclose(point.sum, math.fsum(expected), abs_tol=1e-12)
    assert dict(point.attributes) == {"gen_ai.provider.name": "fake", "gen_ai.request.model": "fake-logprobs"}
    spans = telemetry.spans()
    assert len(spans) == 4
    for span, value in zip(spans, expected, strict=True):
        assert span.attributes is not None
        figure = span.attributes["llm.confidence.calibrated_probability"]
        assert isinstance(figure, float) and math.isclose(figure, value, abs_tol=1e-12)
    read = read_records(records_path)
    assert [r.calibrated_probability for r in read] == [r.calibrated_probability for r in records]


def test_without_a_map_nothing_calibrated_is_exported(telemetry: InMemoryTelemetry) -> None:
    records = answer_all(ConfidenceCallbackHandler(exporters=telemetry.exporters()))
    assert [r.calibrated_probability for r in records] == [None] * 4
    assert "calibrated" not in telemetry.prometheus_text()
    assert not histogram_points(telemetry, "llm.response.calibrated_probability")
    assert all("llm.confidence.calibrated_probability" not in (s.attributes or {}) for s in telemetry.spans())


class BrokenMap(CalibrationMap):
    def apply(self, report: ConfidenceReport) -> float | None:
        raise RuntimeError("a bug of ours")


def test_a_failing_map_is_counted_and_the_call_goes_on(telemetry: InMemoryTelemetry) -> None:
    broken = BrokenMap("sequence_probability", "increasing", POINTS, 30, 20, "2026-11-27T12:00:00Z")
    handler = ConfidenceCallbackHandler(exporters=telemetry.exporters(), calibration=broken)
    records = answer_all(handler)
    assert len(records) == 4 and all(r.report is not None and r.calibrated_probability is None for r in records)
    assert handler.errors == {"calibration": 4}
    assert telemetry.sample("llm_response_sequence_probability_count") == 4  # the rest is exported


# ---- the environment variable ----------------------------------------------------------------

def test_the_variable_loads_the_map_and_a_bad_one_is_a_problem_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(GOOD), encoding="utf-8")
    reading = read_env({OBSERVABILITY_CALIBRATION: f" {path} "})
    assert not reading.problems and reading.config.calibration == load_calibration(path)
    assert read_env({}).config.calibration is None
    reading = read_env({OBSERVABILITY_CALIBRATION: str(tmp_path / "missing.json")})
    [problem] = reading.problems
    assert problem.variable == OBSERVABILITY_CALIBRATION and problem.consequence == NO_CALIBRATION
    assert "does not exist" in problem.message and not reading.fatal and reading.config.calibration is None


ACTIVATED_CALL = """
import observability
from observability.attach import activation as _attach
from observability.testing import FakeLogprobChatModel
handler = _attach.process_wide_handler()
seen = []
handler.on_report = seen.append
FakeLogprobChatModel(tokens=["o", "k"], token_logprobs=[-0.4, -0.5]).invoke("hi")
print("attached" if handler else "not attached", seen[0].calibrated_probability)
"""


@pytest.mark.parametrize("good", [True, False], ids=["map", "bad-path"])
def test_zero_code_activation_uses_the_variable(tmp_path: Path, good: bool) -> None:
    path = tmp_path / "calibration.json"
    if good:
        path.write_text(json.dumps(GOOD), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVABILITY_")}
    env.update(OBSERVABILITY_LANGCHAIN="1", OBSERVABILITY_CALIBRATION=str(path))
    result = subprocess.run([sys.executable, "-c", ACTIVATED_CALL], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    points = [tuple(p) for p in GOOD["points"]]
    expected = str(reference_apply(points, math.exp(-0.45))) if good else "None"
    assert result.stdout.split() == ["attached", expected]
    errors = [line for line in result.stderr.splitlines() if line.startswith("observability:")]
    if good:
        assert not errors
    else:
        [line] = errors
        assert line.startswith(f"observability: {OBSERVABILITY_CALIBRATION}=") and "does not exist" in line
        assert NO_CALIBRATION in line


# ---- on the bundled model --------------------------------------------------------------------

@pytest.mark.real_model
def test_a_map_fitted_on_real_answers_applies_on_a_real_call(tmp_path: Path, chat_model: Any) -> None:
    from benchmarks.evaluate import is_right

    items = [json.loads(line) for line in (ROOT / "benchmarks" / "capitals.jsonl").read_text(encoding="utf-8")
             .splitlines() if line.strip()][:MIN_LABELS]  # 5 of these 20 were answered wrong in make evaluate
    records_path, labels_path, out = tmp_path / "records.jsonl", tmp_path / "labels.jsonl", tmp_path / "map.json"
    model = chat_model(max_tokens=16, logprobs=True, top_logprobs=5)
    recorder = ConfidenceCallbackHandler(exporters=(), record_to=records_path)
    model.batch([item["question"] for item in items],
                [{"callbacks": [recorder], "metadata": {"accepted": item["answers"]}} for item in items])
    records = read_records(records_path)
    correct = [is_right(r.text or "", cast(list[str], r.start.metadata["accepted"])) for r in records]
    assert len(records) == MIN_LABELS and 0 < sum(correct) < MIN_LABELS, correct
    labels_path.write_text("".join(json.dumps({"run_id": str(r.start.run_id), "correct": y}) + "\n"
                                   for r, y in zip(records, correct, strict=True)), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "observability", "evaluate", str(records_path),
                             "--labels", str(labels_path), "--calibration", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

    def sequence_probability(record: ResponseRecord) -> float:
        logprobs = [t.logprob for t in record.tokens]
        return math.exp(math.fsum(logprobs) / len(logprobs))

    points = reference_points([sequence_probability(r) for r in records], correct)
    written = [(float(x), float(p)) for x, p in json.loads(out.read_text(encoding="utf-8"))["points"]]
    assert len(written) == len(points)
    for (wx, wp), (ex, ep) in zip(written, points, strict=True):
        assert math.isclose(wx, ex, rel_tol=1e-9) and math.isclose(wp, ep, rel_tol=1e-12)

    telemetry = InMemoryTelemetry()
    handler = ConfidenceCallbackHandler(exporters=telemetry.exporters(), calibration=out)
    seen: list[ResponseRecord] = []
    handler.on_report = seen.append
    model.invoke("What is the capital of Peru? Answer with the city name only.", config={"callbacks": [handler]})
    [record] = seen
    assert record.report is not None and record.tokens and not handler.errors
    expected = reference_apply(points, sequence_probability(record))
    assert record.calibrated_probability is not None
    assert math.isclose(record.calibrated_probability, expected, abs_tol=1e-9)
    assert telemetry.sample("llm_response_calibrated_probability_sum") == pytest.approx(expected, abs=1e-9)
    [point] = histogram_points(telemetry, "llm.response.calibrated_probability")
    assert point.count == 1 and math.isclose(point.sum, expected, abs_tol=1e-9)
    telemetry.shutdown()


# ---- hostile files: only CalibrationError, and the app runs on without calibration -------------------

HUGE = 10 ** 400
"""A valid JSON integer too large for a float."""
DEEP = "[" * 100_000 + "]" * 100_000


def hostile(text: str) -> str:
    return json.dumps(GOOD).replace('"points": [[0.2, 0.1]', f'"points": [[{text}, 0.1]')


@pytest.mark.parametrize("text", [
    pytest.param(hostile(str(HUGE)), id="400-digit-figure"),
    pytest.param(json.dumps({**GOOD, "points": [[0.2, 0.1], [0.6, HUGE]]}), id="400-digit-probability"),
    pytest.param(json.dumps({**GOOD, "version": HUGE}), id="400-digit-version"),
    pytest.param(json.dumps({**GOOD, "labels": -HUGE}), id="400-digit-negative-count"),
    pytest.param(hostile("1e400"), id="overflowing-float"),
    pytest.param(hostile("NaN"), id="nan"),
    pytest.param(hostile("-Infinity"), id="minus-infinity"),
    pytest.param(DEEP, id="nested-100k-deep"),
    pytest.param(json.dumps({**GOOD, "points": "X"}).replace('"X"', DEEP), id="nested-inside"),
    pytest.param(json.dumps({**GOOD, "points": [[[0.2], {"a": [0.1]}]]}), id="nested-junk-point"),
    pytest.param(json.dumps({**GOOD, "metric": ["sequence_probability"]}), id="metric-list"),
    pytest.param(json.dumps({**GOOD, "metric": {"a": 1}}), id="metric-dict"),
    pytest.param(json.dumps({**GOOD, "orientation": None}), id="orientation-null"),
    pytest.param(json.dumps({**GOOD, "labels": 30.0}), id="labels-float"),
    pytest.param(json.dumps({**GOOD, "correct": True}), id="correct-bool"),
    pytest.param(json.dumps({**GOOD, "points": [[True, 0.1]]}), id="figure-bool"),
    pytest.param(json.dumps({**GOOD, "points": [["0.2", "0.1"]]}), id="figure-string"),
    pytest.param(json.dumps({**GOOD, "points": {"0.2": 0.1}}), id="points-dict"),
    pytest.param(json.dumps([GOOD]), id="a-list"),
    pytest.param('"langchain-confidence.calibration"', id="a-string"),
    pytest.param("", id="empty"),
    pytest.param("\ufeff" + json.dumps(GOOD), id="byte-order-mark"),
    pytest.param(str(HUGE) * 20, id="5000-digit-number"),
])
def test_a_hostile_file_raises_only_the_documented_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "calibration.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CalibrationError, match=f"calibration file {path}"):
        load_calibration(path)


def test_a_huge_or_undecodable_file_is_refused_unread(tmp_path: Path) -> None:
    from observability.core.calibration import MAX_FILE_BYTES

    path = tmp_path / "calibration.json"
    path.write_text(" " * MAX_FILE_BYTES + json.dumps(GOOD), encoding="utf-8")  # valid JSON, too big
    with pytest.raises(CalibrationError, match="larger than 16 MiB"):
        load_calibration(path)
    path.write_bytes(b'{"format": "\xff\xfe"}')
    with pytest.raises(CalibrationError, match=r"cannot be read \(UnicodeDecodeError\)"):
        load_calibration(path)
    with pytest.raises(CalibrationError, match="larger than 16 MiB"):
        load_calibration("/dev/zero")  # endless: read no further than the limit


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner,
                                                                                        max_size=4), max_leaves=12)


@fuzz(400)
@given(st.sampled_from(sorted(GOOD)), json_values)
def test_any_value_in_any_field_raises_only_the_documented_error(field: str, value: Any) -> None:
    try:
        calibration = CalibrationMap.from_json({**GOOD, field: value})
    except CalibrationError:
        return
    assert 0.0 <= calibration(0.5) <= 1.0  # accepted: then it maps like a map


def test_points_at_the_float_limits_map_inside_zero_to_one() -> None:
    calibration = CalibrationMap.from_json({**GOOD, "points": [[-1.7e308, 0.0], [1.7e308, 1.0]]})
    assert calibration(0.0) == 0.5 and calibration(1.6e308) == pytest.approx(0.5 + 1.6 / 3.4)


ENV_CALL = """
import logging, sys
import observability
from observability.attach import activation as _attach
from observability.testing import FakeLogprobChatModel
handler = _attach.process_wide_handler()
seen = []
handler.on_report = seen.append
FakeLogprobChatModel(tokens=["o", "k"], token_logprobs=[-0.4, -0.5]).invoke("hi")
print("attached" if handler else "not attached", len(seen), seen[0].calibrated_probability)
"""


def test_a_hostile_file_in_the_variable_leaves_the_handler_attached_and_doctor_says_why(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    path.write_text(hostile(str(HUGE)), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVABILITY_")}
    env.update(OBSERVABILITY_LANGCHAIN="1", OBSERVABILITY_CALIBRATION=str(path))
    result = subprocess.run([sys.executable, "-c", ENV_CALL], env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["attached", "1", "None"]  # scored and exported, without calibration
    [line] = [line for line in result.stderr.splitlines() if line.startswith("observability:")]
    assert f"{OBSERVABILITY_CALIBRATION}=" in line and "points[0] is not a [figure, probability] pair" in line
    assert NO_CALIBRATION in line and "Traceback" not in result.stderr
    doctor = subprocess.run([sys.executable, "-m", "observability", "doctor"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert doctor.returncode == 1
    assert "calibration off (OBSERVABILITY_CALIBRATION is set but unusable: see the error below)" in doctor.stdout
    assert f"error: {OBSERVABILITY_CALIBRATION}=" in doctor.stdout and "points[0]" in doctor.stdout


# ---- what the fit writes always loads ------------------------------------------------------------


def ulps_apart(base: float, steps: int) -> float:
    for _ in range(steps):
        base = math.nextafter(base, math.inf)
    return base


close_figures = st.lists(st.tuples(st.sampled_from([0.1, 0.5, 0.7, 3.0, 1e300, 4.49e307]), st.integers(0, 3),
                                   st.booleans()), min_size=MIN_LABELS, max_size=60)


@fuzz(300)
@given(close_figures, st.booleans())
def test_a_fit_on_figures_a_few_ulps_apart_always_loads(rows: list[tuple[float, int, bool]],
                                                        increasing: bool) -> None:
    figures = [ulps_apart(base, steps) for base, steps, _ in rows]
    correct = [y for _, _, y in rows]
    if sum(correct) in (0, len(correct)):
        return
    fitted = fit_isotonic(figures, correct, metric="perplexity", increasing=increasing)
    assert CalibrationMap.from_json(fitted.to_json()) == fitted
    probabilities = [p for _, p in fitted.points]
    assert probabilities == sorted(probabilities, reverse=not increasing)
    assert all(min(figures) <= x <= max(figures) for x, _ in fitted.points)


def test_figures_a_few_ulps_apart_pool_into_one_point(tmp_path: Path) -> None:
    """Found by a search: four groups at 0.1 plus 0..3 ulps whose pooled means rounded to one figure
    ("figures must be strictly ascending" on loading what the fit wrote)."""
    groups = {0: (1, 2), 1: (4, 1), 2: (3, 6), 3: (3, 4)}  # ulps above 0.1: (right, wrong)
    figures = [ulps_apart(0.1, k) for k, (right, wrong) in groups.items() for _ in range(right + wrong)]
    correct = [y for right, wrong in groups.values() for y in [True] * right + [False] * wrong]
    path = tmp_path / "calibration.json"
    write_calibration(fit_isotonic(figures, correct), path)
    loaded = load_calibration(path)
    assert [p for _, p in loaded.points] == sorted(p for _, p in loaded.points)
    assert all(0.1 <= x <= ulps_apart(0.1, 3) for x, _ in loaded.points)


def test_an_unwritable_map_is_refused_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    broken = CalibrationMap("perplexity", "decreasing", ((1.0, 0.9), (math.inf, 0.0)), 30, 20, "now")
    with pytest.raises(CalibrationError, match=r"the fitted calibration map: points\[1\]"):
        write_calibration(broken, path)
    assert not path.exists()
    with pytest.raises(CalibrationError, match="1 of 21 labelled responses have a figure that is not a finite"):
        fit_isotonic([math.inf] + [float(i) for i in range(20)], [i % 2 == 0 for i in range(21)],
                     metric="perplexity", increasing=False)
