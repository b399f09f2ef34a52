"""Every PromQL expression of the dashboard and the alert rules, run against a real Prometheus that
scraped real handler metrics from real model calls.

The app: the real ``ChatOpenAI`` on the bundled model, ``ConfidenceCallbackHandler`` with the real
default exporters (spans kept in memory, metrics in a fresh registry served by
``prometheus_client.start_http_server``). Traffic, known in advance: ok answers with and without
logprobs, streamed answers (time to first token), streams broken off (cancelled) and calls that
time out (error); then verdicts on those answers (``record_feedback``), a planned number right and
wrong per confidence bucket. One verdict counts per response, so the verdicts go to copies of the
real answers: each answer's own callbacks (its start and its ``LLMResult`` from the server) replayed
under new run ids into a second handler, whose exporter passes only verdicts on to the app's
exporters (the copies are not counted as responses). Prometheus scrapes every second, serves the console dashboard and
evaluates the rules with every range and offset shortened to fit a few minutes of traffic
(``deploy_support.shrink``); the unmodified rules are also executed, and tested on days of
synthetic series by ``promtool test rules``.
"""

from __future__ import annotations

import html
import math
import re
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import openai
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from prometheus_client import CollectorRegistry, start_http_server

from observability import ConfidenceCallbackHandler, ResponseRecord
from observability.demo.model_server import MODEL_NAME, LocalModelServer
from observability.exporters import default_exporters
from tests.conftest import start_or_fail
from tests.deploy_support import (
    CONSOLE_LIBRARIES,
    CONSOLES,
    alert_rules,
    boolify,
    dashboard,
    dashboard_queries,
    grafana_to_promql,
    operands,
    recording_rules,
    rules,
    shrink,
    shrunk_rules,
)
from tests.export_support import OtelSinks
from tools.prometheus_server import PrometheusServer, scrape_job

pytestmark = [pytest.mark.real_model, pytest.mark.real_backend]

QUESTIONS = ["Name a primary colour.", "What is 2 + 2?", "Capital of France?", "Name a fruit.",
             "What colour is the sky?", "Name a day of the week."]
# The plan: (status, logprobs requested) → number of model calls.
PLAN = {("ok", "invoke"): 6, ("ok", "stream"): 2, ("ok", "no_logprobs"): 2, ("cancelled", "stream"): 6,
        ("error", "timeout"): 3}
TOTAL = sum(PLAN.values())
# Verdicts: (correct, wrong) per confidence bucket of the answers, in bucket order, repeated when the
# answers fall in more buckets. Over 100 in all (the calibration-error rule's minimum) with two buckets.
VERDICT_PLAN = [(36, 12), (16, 48), (30, 30), (45, 5)]
SEED_VERDICTS = 60
"""Verdicts per series before the planned ones (see ``_feedback``); more than any plan entry."""


@dataclass
class Verdicts:
    """What the test sent: planned verdicts per bucket (bucket lower bound as the exporter labels it)."""

    planned: dict[str, tuple[int, int]]
    unscored: int  # planned verdicts on answers without logprobs (confidence="none"), all correct

    def accuracy(self, bucket: str) -> float:
        correct, wrong = self.planned[bucket]
        return correct / (correct + wrong)

    def calibration_error(self) -> float:
        """sum over buckets of |correct - verdicts x midpoint|, over all verdicts (scored answers only)."""
        gaps = sum(abs(correct - (correct + wrong) * (float(bucket) + 0.05))
                   for bucket, (correct, wrong) in self.planned.items())
        return gaps / sum(correct + wrong for correct, wrong in self.planned.values())


class Captured(BaseCallbackHandler):
    """Each real answer's start and end callbacks, to replay as further responses of the same answer."""

    def __init__(self) -> None:
        self.starts: dict[UUID, tuple[Any, Any, dict[str, Any]]] = {}
        self.ends: dict[UUID, Any] = {}

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.starts[run_id] = (serialized, messages, kwargs)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.ends[run_id] = response


class VerdictsOnly:
    """An exporter that passes verdicts on to the app's exporters and nothing else."""

    def __init__(self, exporters: Any) -> None:
        self.exporters = exporters

    def export(self, records: Any) -> None:
        pass

    def export_feedback(self, record: ResponseRecord, correct: bool) -> None:
        for exporter in self.exporters:
            if hasattr(exporter, "export_feedback"):
                exporter.export_feedback(record, correct)


@dataclass
class Live:
    prometheus: PrometheusServer
    sinks: OtelSinks
    records: list[ResponseRecord] = field(default_factory=list)
    verdicts: Verdicts = field(default_factory=lambda: Verdicts({}, 0))


def _traffic(local_model: LocalModelServer, handler: ConfidenceCallbackHandler, prometheus: PrometheusServer,
             registry: CollectorRegistry, captured: Captured) -> None:
    from langchain_openai import ChatOpenAI

    def model(**kwargs: Any) -> Any:
        options: dict[str, Any] = {"model": MODEL_NAME, "base_url": local_model.base_url, "api_key": "unused",
                                   "temperature": 0, "max_tokens": 24, "timeout": 120, "max_retries": 0}
        options.update(kwargs)
        return ChatOpenAI(**options)

    config: Any = {"callbacks": [handler, captured]}
    with_logprobs = model().bind(logprobs=True, top_logprobs=5)
    rushed = model(timeout=0.001).bind(logprobs=True)

    def invoke(question: str) -> None:
        with_logprobs.invoke(question, config=config)

    def stream(question: str) -> None:
        for _ in with_logprobs.stream(question, config=config):
            pass

    def without_logprobs(question: str) -> None:
        model().invoke(question, config=config)

    def cancel(question: str) -> None:
        chunks = with_logprobs.stream(f"Tell a long story about {question}", config=config)
        for count, _ in enumerate(chunks, start=1):
            if count >= 3:
                break
        chunks.close()  # the app stops reading: the run ends as "cancelled"

    def fail(question: str) -> None:
        with pytest.raises(openai.APITimeoutError):
            rushed.invoke(question, config=config)

    # Confidence gates, decided by their own private scorer (not counted in llm_responses_total): one
    # that always keeps and one that always falls back, so the fallback-rate panel has both outcomes.
    from langchain_core.runnables import RunnableLambda

    from observability import confidence_fallback

    gates = [confidence_fallback(with_logprobs, RunnableLambda(lambda _: "unsure"), threshold=0.0, name="keeps",
                                 registry=registry),
             confidence_fallback(with_logprobs, RunnableLambda(lambda _: "unsure"), threshold=0.5,
                                 metric=lambda _: False, name="falls_back", registry=registry)]

    def gated(question: str) -> None:
        for gate in gates:
            gate.invoke(question)

    calls = {("ok", "invoke"): invoke, ("ok", "stream"): stream, ("ok", "no_logprobs"): without_logprobs,
             ("cancelled", "stream"): cancel, ("error", "timeout"): fail}
    # First one call of each kind, and wait until Prometheus has scraped every series they made:
    # rate() and increase() only see increments after a series' first sample.
    for call in calls.values():
        call(QUESTIONS[0])
    gated(QUESTIONS[0])
    kinds = len({(status, "not_requested" if kind == "no_logprobs" else "") for status, kind in PLAN})
    prometheus.wait_for("count(llm_responses_total)", lambda r: bool(r) and float(r[0]["value"][1]) >= kinds,
                        timeout=60)
    prometheus.wait_for("count(llm_confidence_gate_decisions_total)",
                        lambda r: bool(r) and float(r[0]["value"][1]) >= len(gates), timeout=60)
    for key, call in calls.items():
        for question in QUESTIONS[1:PLAN[key]]:
            call(question)
    for question in QUESTIONS[1:3]:
        gated(question)


def _bucket(record: ResponseRecord) -> str:
    """Tenths of the answer's sequence probability, by lower bound; 1.0 joins the top one."""
    assert record.report is not None and record.report.sequence_probability is not None
    return f"{min(math.floor(record.report.sequence_probability * 10), 9) / 10:.1f}"


def _right_after_a_scrape(prometheus: PrometheusServer) -> None:
    """Return within 0.3 s of a scrape of the app, so a burst of verdicts lands between two scrapes."""
    prometheus.wait_for('time() - timestamp(up{job="llm-app"}) < 0.3', timeout=30, interval=0.02)


def _feedback(handler: ConfidenceCallbackHandler, records: list[ResponseRecord],
              prometheus: PrometheusServer, captured: Captured) -> Verdicts:
    """Verdicts on the answers, exact counts per bucket through increase() over the whole traffic.

    increase() counts what a series gained after its first sample, scaled by one extrapolation factor
    that depends only on the sample timestamps, the same for all series scraped together. So every
    series is first made with SEED_VERDICTS (in one burst between two scrapes), and only the planned
    verdicts sent after Prometheus has seen them are counted: then the accuracy per bucket (a ratio of
    increases) is exactly the planned one. Seeds larger than the planned counts keep Prometheus from
    shortening the extrapolation of a series towards zero.
    """
    answered = [r for r in records if r.status == "ok" and r.report is not None
                and r.report.sequence_probability is not None]
    by_bucket: dict[str, list[ResponseRecord]] = {}
    for record in answered:
        by_bucket.setdefault(_bucket(record), []).append(record)
    assert len(by_bucket) >= 2, f"the answers fell in fewer than two confidence buckets: {sorted(by_bucket)}"
    unscored = [r for r in records if r.status == "ok" and r.logprobs == "not_requested"]
    assert unscored

    judge = ConfidenceCallbackHandler(exporters=[VerdictsOnly(handler.exporters)], feedback_window=10_000)
    copies: list[ResponseRecord] = []
    judge.on_report = copies.append

    def send(record: ResponseRecord, correct: bool, times: int) -> None:
        """One verdict on each of ``times`` copies of the real answer (one verdict per response counts)."""
        serialized, messages, kwargs = captured.starts[record.start.run_id]
        for _ in range(times):
            run_id = uuid4()
            judge.on_chat_model_start(serialized, messages, run_id=run_id,
                                      **{k: v for k, v in kwargs.items() if k != "parent_run_id"})
            judge.on_llm_end(captured.ends[record.start.run_id], run_id=run_id)
            copy = copies[-1]
            assert copy.start.run_id == run_id and copy.logprobs == record.logprobs
            assert record.report is None or _bucket(copy) == _bucket(record)
            assert judge.record_feedback(run_id, correct)

    planned = {bucket: VERDICT_PLAN[index % len(VERDICT_PLAN)] for index, bucket in enumerate(sorted(by_bucket))}
    _right_after_a_scrape(prometheus)
    for bucket in planned:
        send(by_bucket[bucket][0], True, SEED_VERDICTS)
        send(by_bucket[bucket][-1], False, SEED_VERDICTS)
    send(unscored[0], True, SEED_VERDICTS)
    seeds = SEED_VERDICTS * (2 * len(planned) + 1)
    prometheus.wait_for("sum(llm_feedback_total)", lambda r: bool(r) and float(r[0]["value"][1]) == seeds, timeout=60)
    first_samples = {float(s["value"][1]) for s in prometheus.query("min_over_time(llm_feedback_total[10m])")}
    assert first_samples == {SEED_VERDICTS}, f"a scrape fell inside the burst of seed verdicts: {first_samples}"
    for bucket, (correct, wrong) in planned.items():
        runs = by_bucket[bucket]
        for number in range(correct + wrong):  # spread over the bucket's answers
            send(runs[number % len(runs)], number < correct, 1)
    send(unscored[-1], True, 3)
    sent = seeds + sum(correct + wrong for correct, wrong in planned.values()) + 3
    prometheus.wait_for("sum(llm_feedback_total)", lambda r: bool(r) and float(r[0]["value"][1]) == sent, timeout=60)
    return Verdicts(planned, 3)


@pytest.fixture(scope="module")
def live(local_model: LocalModelServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    sinks = OtelSinks()
    registry = CollectorRegistry()
    records: list[ResponseRecord] = []
    handler = ConfidenceCallbackHandler(
        exporters=default_exporters(tracer_provider=sinks.tracer_provider, meter_provider=sinks.meter_provider,
                                    registry=registry),
        on_report=records.append, feedback_window=100)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    rules = shrunk_rules(tmp_path_factory.mktemp("rules") / "shrunk.rules.yml")
    prometheus = PrometheusServer(
        scrape_configs=[scrape_job("llm-app", [f"127.0.0.1:{server.server_port}"])],
        scrape_interval="1s", evaluation_interval="1s", rule_files=[rules],
        extra_args=[f"--web.console.templates={CONSOLES}", f"--web.console.libraries={CONSOLE_LIBRARIES}"])
    try:
        start_or_fail(prometheus, "Prometheus")
        prometheus.wait_for('up{job="llm-app"} == 1', timeout=60)
        captured = Captured()
        _traffic(local_model, handler, prometheus, registry, captured)
        prometheus.wait_for("sum(llm_responses_total)",
                            lambda result: bool(result) and float(result[0]["value"][1]) == TOTAL, timeout=60)
        verdicts = _feedback(handler, records, prometheus, captured)
        yield Live(prometheus, sinks, records, verdicts)
    finally:
        prometheus.stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _has_data(result: list[dict[str, Any]]) -> bool:
    return bool(result) and all(math.isfinite(float(series["value"][1])) for series in result)


def test_the_planned_traffic_reached_prometheus(live: Live) -> None:
    by_status = {s["metric"]["status"]: float(s["value"][1])
                 for s in live.prometheus.query("sum by (status) (llm_responses_total)")}
    assert by_status == {"ok": 10.0, "cancelled": 6.0, "error": 3.0}
    not_requested = live.prometheus.query_value('sum(llm_responses_total{logprobs="not_requested"})')
    assert not_requested == PLAN[("ok", "no_logprobs")]
    labels = live.prometheus.query("llm_responses_total")[0]["metric"]
    assert (labels["provider"], labels["model"]) == ("openai", MODEL_NAME)
    # Cross-check the records the handler reported with the counters Prometheus scraped.
    scraped = {(s["metric"]["status"], s["metric"]["logprobs"]): float(s["value"][1])
               for s in live.prometheus.query("sum by (status, logprobs) (llm_responses_total)")}
    assert scraped == dict(Counter((r.status, r.logprobs) for r in live.records))


def test_every_dashboard_query_returns_data(live: Live) -> None:
    queries = list(dashboard_queries(dashboard()))
    assert len(queries) >= 20
    empty = []
    for where, target in queries:
        expr = grafana_to_promql(target["expr"])
        try:
            live.prometheus.wait_for(expr, _has_data, timeout=30)
        except Exception as exc:  # collect them all: one report of every query without data
            empty.append(f"{where}: {expr}\n    {exc}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_dashboard_range_queries_return_points_over_the_traffic(live: Live) -> None:
    now = time.time()
    for where, target in dashboard_queries(dashboard()):
        if target.get("range") and "ALERTS" not in target["expr"]:
            result = live.prometheus.query_range(grafana_to_promql(target["expr"]), now - 120, now, step=5)
            points = [float(v) for series in result for _, v in series["values"]]
            assert any(math.isfinite(p) for p in points), f"{where}: no finite point in the last 2 minutes"


def test_dashboard_variables_find_the_provider_and_model(live: Live) -> None:
    # label_values(METRIC{...}, LABEL) is Grafana's call of /api/v1/label/LABEL/values?match[]=METRIC{...}.
    expected = {"provider": ["openai"], "model": [MODEL_NAME]}
    for variable in dashboard()["templating"]["list"]:
        inner = variable["query"].removeprefix("label_values(").removesuffix(")")
        metric, label = (part.strip() for part in inner.rsplit(",", 1))
        assert label == variable["name"]
        values = live.prometheus._api(f"/api/v1/label/{label}/values", {"match[]": grafana_to_promql(metric)})
        assert values == expected[label]


def _panel_expr(title: str, ref: str = "A") -> str:
    board = dashboard()
    panel = next(panel for panel in board["panels"] if panel["title"] == title)
    return grafana_to_promql(next(t["expr"] for t in panel["targets"] if t["refId"] == ref))


def test_panel_values_agree_with_the_traffic(live: Live) -> None:
    """Independent checks on a few panel values (rates extrapolate, so bounds rather than equalities)."""
    without = live.prometheus.query_value(_panel_expr("Responses without logprobs"))
    # 2 of the 10 answers (status ok) were asked without logprobs; failed calls are not counted.
    assert without is not None and 0.05 < without < 0.5
    p10, p50, p90 = (live.prometheus.query_value(_panel_expr("Sequence probability (p10 / p50 / p90)", ref))
                     for ref in "ABC")
    assert p10 is not None and p50 is not None and p90 is not None
    assert 0 < p10 <= p50 <= p90 <= 1
    observed = sorted(r.report.sequence_probability for r in live.records
                      if r.status == "ok" and r.report and r.report.sequence_probability is not None)
    assert observed[0] - 0.2 <= p50 <= observed[-1] + 0.2  # interpolated within the observed values' buckets


def _by_bucket(result: list[dict[str, Any]]) -> dict[str, float]:
    return {series["metric"]["confidence"]: float(series["value"][1]) for series in result}


def test_verdicts_are_counted_by_outcome_and_bucket(live: Live) -> None:
    counted = {(s["metric"]["confidence"], s["metric"]["outcome"]): float(s["value"][1])
               for s in live.prometheus.query("sum by (confidence, outcome) (llm_feedback_total)")}
    expected = {key: float(SEED_VERDICTS + count) for bucket, (correct, wrong) in live.verdicts.planned.items()
                for key, count in (((bucket, "correct"), correct), ((bucket, "incorrect"), wrong))}
    expected[("none", "correct")] = float(SEED_VERDICTS + live.verdicts.unscored)
    assert counted == expected


def test_reliability_panel_shows_the_accuracy_the_verdicts_imply(live: Live) -> None:
    title = "Accuracy per confidence bucket"
    observed, expected, gap, verdicts = (_by_bucket(live.prometheus.query(_panel_expr(title, ref)))
                                         for ref in "ABCD")
    planned = live.verdicts.planned
    assert set(observed) == set(expected) == set(gap) == set(verdicts) == set(planned)  # no "none" row
    for bucket in planned:
        assert observed[bucket] == pytest.approx(live.verdicts.accuracy(bucket), rel=1e-9), bucket
        assert expected[bucket] == pytest.approx(float(bucket) + 0.05, rel=1e-12), bucket
        assert gap[bucket] == pytest.approx(live.verdicts.accuracy(bucket) - float(bucket) - 0.05, abs=1e-9), bucket
    # increase() extrapolates the counts towards the window's ends, by one factor (at least 1) for all
    # series scraped together; over this short traffic the factor is large, over hours it is near 1
    sent = {bucket: correct + wrong for bucket, (correct, wrong) in planned.items()}
    for bucket, count in sent.items():
        assert verdicts[bucket] / sum(verdicts.values()) == pytest.approx(count / sum(sent.values()), rel=1e-9)
        assert verdicts[bucket] >= count


def test_console_reliability_table_shows_the_accuracy_the_verdicts_imply(live: Live) -> None:
    with urllib.request.urlopen(f"{live.prometheus.url}/consoles/llm-confidence.html", timeout=30) as response:
        page = response.read().decode()
    assert "error executing template" not in page
    table = re.search(r'<table id="reliability">(.*?)</table>', page, re.S)
    assert table, page[:2000]
    rows = [[html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", table[1], re.S)]
    rows = [row for row in rows if row]
    assert [row[2] for row in rows] == sorted(live.verdicts.planned)  # one row per bucket, in order; no "none"
    for provider, model, bucket, expected, observed, gap, _ in rows:
        assert (provider, model) == ("openai", MODEL_NAME)
        accuracy = live.verdicts.accuracy(bucket)
        assert float(expected) == pytest.approx(float(bucket) + 0.05, abs=5e-4)
        assert float(observed) == pytest.approx(accuracy, abs=5e-4)
        assert float(gap) == pytest.approx(accuracy - float(bucket) - 0.05, abs=5e-4)


def test_recorded_calibration_error_is_the_one_the_verdicts_imply(live: Live) -> None:
    expected = live.verdicts.calibration_error()
    assert expected > 0.1  # the plan is far from calibrated: a wrong weighting would show
    live.prometheus.wait_for(
        "provider_model:llm_feedback_calibration_error:6h",
        lambda r: len(r) == 1 and float(r[0]["value"][1]) == pytest.approx(expected, rel=1e-9), timeout=30)


def test_every_rule_expression_returns_data(live: Live) -> None:
    """Each operand of each rule (comparisons made ``bool``) reads series that exist on real metrics."""
    empty = []
    named = [(rule.get("alert") or rule["record"], rule["expr"]) for rule in rules()]
    assert len(named) == len(alert_rules()) + len(recording_rules())
    for name, rule_expr in named:
        for operand in operands(shrink(rule_expr)):
            expr = boolify(operand)
            try:
                live.prometheus.wait_for(expr, _has_data, timeout=30)
            except Exception as exc:
                empty.append(f"{name}: {expr}\n    {exc}")
    assert not empty, "rule expressions without data:\n" + "\n".join(empty)
    # A misspelt metric must come back empty, or the check above proves nothing.
    assert live.prometheus.query("sum(rate(llm_responses_totall[10m]))") == []


def test_unmodified_rules_execute(live: Live) -> None:
    for rule in rules():
        live.prometheus.query(rule["expr"])  # raises PrometheusError on any evaluation error


def test_loaded_rules_are_healthy_and_error_and_cancel_alerts_fire(live: Live) -> None:
    groups = live.prometheus._api("/api/v1/rules", {})["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(loaded) == {rule.get("alert") or rule["record"] for rule in rules()}
    assert all(rule["health"] == "ok" and not rule.get("lastError") for rule in loaded.values()), loaded
    # 3 of 19 calls failed (> 5%) and 6 of 19 were cancelled (> 25%): both alerts must fire.
    for alert in ("LLMErrorRateHigh", "LLMCancelRateHigh"):
        live.prometheus.wait_for(f'ALERTS{{alertname="{alert}", alertstate="firing", model="{MODEL_NAME}"}}',
                                 timeout=60)
    # Logprobs kept arriving for this model, so this one must not.
    assert live.prometheus.query('ALERTS{alertname="LLMLogprobsMissing"}') == []


def test_exemplars_on_confidence_histograms_point_at_the_real_spans(live: Live) -> None:
    span_traces = {format(span.context.trace_id, "032x") for span in live.sinks.spans()}
    assert span_traces
    for metric in ("llm_response_sequence_probability_bucket", "llm_response_min_token_probability_bucket",
                   "llm_response_low_confidence_ratio_bucket", "llm_time_to_first_token_seconds_bucket"):
        found = live.prometheus.query_exemplars(metric)
        trace_ids = {ex["labels"]["trace_id"] for series in found for ex in series["exemplars"]}
        assert trace_ids, f"no exemplars on {metric}"
        assert trace_ids <= span_traces, f"{metric}: exemplar trace ids not among the spans made"
