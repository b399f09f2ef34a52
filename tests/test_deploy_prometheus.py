"""The Prometheus config and alert rules, checked by Prometheus's own ``promtool``.

``promtool test rules`` runs deploy/prometheus/tests/llm-confidence.test.yml: for every alert a
model that must fire and models that must not, on days of synthetic series, and the values the
recording rules compute. To show those tests can fail, each is also run against a copy of the rules
with one threshold, constant or operator changed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.deploy_support import (
    PROMETHEUS_CONFIG,
    RULE_TESTS,
    RULES,
    alert_rules,
    load_yaml,
    recording_rules,
    rules,
    run,
    tool,
)

RULE_COUNT = f"SUCCESS: {len(rules())} rules found"


@pytest.mark.system_tools
def test_promtool_check_config_accepts_the_compose_config_and_its_rules() -> None:
    result = run([tool("promtool"), "check", "config", str(PROMETHEUS_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout  # the relative rule_files glob resolves to our file
    assert RULE_COUNT in result.stdout


@pytest.mark.system_tools
def test_promtool_check_rules() -> None:
    result = run([tool("promtool"), "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert RULE_COUNT in result.stdout
    assert len(alert_rules()) == 6 and len(recording_rules()) == 4


@pytest.mark.system_tools
def test_promtool_rule_unit_tests_pass() -> None:
    result = run([tool("promtool"), "test", "rules", str(RULE_TESTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test_that_fires_and_one_that_does_not() -> None:
    expected: dict[str, set[bool]] = {rule["alert"]: set() for rule in alert_rules()}
    for case in load_yaml(RULE_TESTS)["tests"]:
        for check in case["alert_rule_test"]:
            expected[check["alertname"]].add(bool(check["exp_alerts"]))
    assert expected == {name: {True, False} for name in expected}
    # "does not fire" is also tested by models that stay silent next to the firing one
    assert all(len({s["series"].split('model="')[1].split('"')[0] for s in case["input_series"]}) >= 2
               for case in load_yaml(RULE_TESTS)["tests"])


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    recorded = recording_rules()
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, rule["alert"]
        assert rule["for"], rule["alert"]
        # grouped per model, so one noisy model does not hide (or raise) another's alert: in the alert's
        # own expression, or in that of every recorded series it reads
        grouped = [expr for name, expr in recorded.items() if name in rule["expr"]] or [rule["expr"]]
        assert all("by (provider, model)" in expr for expr in grouped), rule["alert"]


def test_recorded_series_are_named_level_metric_operations() -> None:
    """Prometheus's naming convention; the colons also keep them apart from the exporter's series."""
    for name in recording_rules():
        level, metric, operation = name.split(":")
        assert level and metric.startswith("llm_") and operation, name


@pytest.mark.system_tools
@pytest.mark.parametrize(("old", "new"), [
    pytest.param("< 0.8 *", "< 0.95 *", id="confidence-drop-threshold"),
    pytest.param("              0.2\n", "              0.05\n", id="low-confidence-floor"),
    pytest.param("unless on (provider, model)", "or on (provider, model)", id="logprobs-missing-operator"),
    pytest.param("> 0.05\n", "> 0.01\n", id="error-rate-threshold"),
    pytest.param("> 0.25\n", "> 0.5\n", id="cancel-rate-threshold"),
    pytest.param("for: 15m", "for: 1m", id="for-duration"),
    pytest.param("> 0.1 + avg_over_time", "> 0.2 + avg_over_time", id="calibration-drift-margin"),
    pytest.param(">= 100\n", ">= 50\n", id="calibration-minimum-verdicts"),
    pytest.param("vector(0.95)", "vector(0.9)", id="bucket-midpoint"),
    pytest.param('outcome="correct", confidence!="none"', 'confidence!="none"', id="calibration-correct-only"),
])
def test_rule_unit_tests_catch_a_changed_rule(tmp_path: Path, old: str, new: str) -> None:
    text = RULES.read_text(encoding="utf-8")
    assert old in text
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / RULES.name).write_text(text.replace(old, new, 1), encoding="utf-8")
    shutil.copy(RULE_TESTS, tmp_path / "tests" / RULE_TESTS.name)
    result = run([tool("promtool"), "test", "rules", str(tmp_path / "tests" / RULE_TESTS.name)])
    assert result.returncode != 0, f"promtool test rules still passes with {old!r} -> {new!r}"
    assert "FAILED" in result.stdout + result.stderr
