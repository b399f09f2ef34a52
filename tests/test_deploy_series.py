"""Every metric name the dashboards, alert rules, rule tests and console dashboard read is a series
the Prometheus exporter writes today (no panel or rule left on a removed or renamed series), or one
that a recording rule of ours records.

The names written are read from a registry the real exporter filled, not from our definitions.
"""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

from observability.exporters import PrometheusExporter
from tests.deploy_support import CONSOLE_LIBRARIES, CONSOLES, DASHBOARD, RULE_TESTS, RULES, recording_rules
from tests.export_support import make_record, make_report

_SERIES = re.compile(r"\b(llm_[a-z_]+)\b")
_RECORDED = re.compile(r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b")
"""Recording-rule names (``level:metric:operations``; the exporter's names have no colon)."""
REMOVED = ("llm_response_mean_logprob", "llm_response_perplexity")


def written_series() -> set[str]:
    """What the exporter writes (a response, a verdict on it), and what a confidence gate writes (its
    decisions counter)."""
    from observability.langchain.gate import _prometheus_counter

    registry = CollectorRegistry()
    exporter = PrometheusExporter(registry=registry)
    record = make_record(report=make_report(), first_token_after=0.2)
    exporter.export([record])
    exporter.export_feedback(record, True)
    gate = _prometheus_counter(registry, "llm")
    assert gate is not None
    gate.labels("gate", "kept", "provider", "model").inc()
    return {sample.name for family in registry.collect() for sample in family.samples}


def test_deploy_files_read_only_series_the_exporter_writes() -> None:
    written = written_series()
    assert {"llm_responses_total", "llm_response_sequence_probability_bucket",
            "llm_time_to_first_token_seconds_bucket", "llm_feedback_total"} <= written
    recorded = set(recording_rules())
    assert recorded and all(_RECORDED.fullmatch(name) for name in recorded)
    templates = {name for path in CONSOLE_LIBRARIES.glob("*.lib")
                 for name in re.findall(r'define "(llm_[a-z_]+)"', path.read_text(encoding="utf-8"))}
    assert {"llm_value", "llm_probability"} <= templates  # console template names are not series
    files = [DASHBOARD, RULES, RULE_TESTS, *CONSOLES.glob("*.html")]
    for path in files:
        text = path.read_text(encoding="utf-8")
        # comments may name the removed series (to explain their removal); queries may not
        queries = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        unrecorded = set(_RECORDED.findall(queries)) - recorded
        assert not unrecorded, f"{path.name} reads series no recording rule records: {sorted(unrecorded)}"
        unknown = set(_SERIES.findall(_RECORDED.sub("", queries))) - written - templates
        assert not unknown, f"{path.name} reads series the exporter does not write: {sorted(unknown)}"


def test_the_check_above_can_fail() -> None:
    written = written_series()
    assert not any(name.startswith(REMOVED) for name in written)
    assert set(_SERIES.findall("sum(rate(llm_response_perplexity_sum[5m]))")) - written
    assert set(_RECORDED.findall("provider_model:llm_feedback_calibration_error:1h > 0.1")) - set(recording_rules())
