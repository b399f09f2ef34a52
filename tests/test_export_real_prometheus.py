"""A real Prometheus scrapes real model calls' metrics; PromQL and the exemplar API read them back.

This process runs the calls through the handler into a fresh registry served by
prometheus_client (OpenMetrics, so exemplars travel) on a free loopback port; Debian's
Prometheus (exemplar storage on) scrapes it every second. Expected values are computed here
from the records ``on_report`` received, with our own implementations of Prometheus's
``histogram_quantile`` interpolation and ``rate`` extrapolation over the raw scraped samples.
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.utils import floatToGoString

from observability import ConfidenceCallbackHandler, ResponseRecord
from observability.demo.model_server import MODEL_NAME
from observability.demo.process import free_port
from observability.exporters import HISTOGRAMS, OpenTelemetryTracingExporter, PrometheusExporter
from tests.export_support import OtelSinks

pytestmark = [pytest.mark.real_model, pytest.mark.real_backend]

DEFINITIONS = {d.name: d for d in HISTOGRAMS}


def bucket_quantile(q: float, bounds: tuple[float, ...], values: list[float]) -> float:
    """Prometheus's ``histogram_quantile`` over cumulative bucket counts (2.x classic histograms)."""
    uppers = [*bounds, math.inf]
    counts = [sum(1 for v in values if v <= upper) for upper in uppers]
    rank = q * counts[-1]
    b = bisect.bisect_left(counts, rank)
    if b == len(uppers) - 1:
        return uppers[-2]
    if b == 0 and uppers[0] <= 0:
        return uppers[0]
    start, end, count = 0.0, uppers[b], float(counts[b])
    if b > 0:
        start = uppers[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count)


def extrapolated_rate(samples: list[tuple[float, float]], at: float, window: float) -> float:
    """Prometheus 2.x ``rate`` of a counter from the raw samples in ``[at - window, at]``.

    Times are whole milliseconds, as Prometheus keeps them (epoch seconds as floats would lose
    precision in the last digits)."""
    times = [round(t * 1000) for t, _ in samples]
    values = [v for _, v in samples]
    end_ms = round(at * 1000)
    increase = values[-1] - values[0]
    for previous, current in itertools.pairwise(values):
        if current < previous:
            increase += previous
    to_start = (times[0] - (end_ms - round(window * 1000))) / 1000
    to_end = (end_ms - times[-1]) / 1000
    sampled = (times[-1] - times[0]) / 1000
    average_gap = sampled / (len(samples) - 1)
    if increase > 0 and values[0] >= 0:
        to_start = min(to_start, sampled * (values[0] / increase))
    threshold = average_gap * 1.1
    interval = sampled + (to_start if to_start < threshold else average_gap / 2)
    interval += to_end if to_end < threshold else average_gap / 2
    return increase * (interval / sampled) / window


@pytest.fixture
def served_registry() -> Iterator[tuple[CollectorRegistry, int]]:
    registry = CollectorRegistry()
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield registry, port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_promql_and_exemplars_on_a_real_prometheus(served_registry: tuple[CollectorRegistry, int],
                                                   prometheus: Any, chat_model: Any) -> None:
    registry, port = served_registry
    otel = OtelSinks()
    records: list[ResponseRecord] = []
    handler = ConfidenceCallbackHandler(
        exporters=[OpenTelemetryTracingExporter(tracer_provider=otel.tracer_provider),
                   PrometheusExporter(registry=registry)],
        on_report=records.append)
    config: Any = {"callbacks": [handler]}
    prom = prometheus([f"127.0.0.1:{port}"])
    prom.wait_for('up{job="app"} == 1', timeout=60)

    llm = chat_model(max_tokens=12).bind(logprobs=True, top_logprobs=3)
    for question in ("Say hello.", "Name a colour.", "Count to three."):
        llm.invoke(question, config=config)
    chat_model(max_tokens=4).invoke("hi", config=config)
    prom.wait_for("sum(llm_responses_total) == 4", timeout=60)

    for question in ("Name a fruit.", "Name a planet.", "Name a river."):
        llm.invoke(question, config=config)
    dead = chat_model(base_url=f"http://127.0.0.1:{free_port()}/v1", timeout=5)
    for _ in range(2):
        with pytest.raises(openai.APIConnectionError):
            dead.invoke("hi", config=config)
    "".join(str(c.content) for c in llm.stream("Name an animal.", config=config))
    assert len(records) == 10 and not handler.errors
    prom.wait_for("sum(llm_responses_total) == 10", timeout=60)

    # sum by (status)
    by_status = {r["metric"]["status"]: float(r["value"][1])
                 for r in prom.query("sum by (status) (llm_responses_total)")}
    assert by_status == {status: float(n) for status, n in Counter(r.status for r in records).items()}
    assert by_status == {"ok": 8.0, "error": 2.0}

    # histogram_quantile, against our own interpolation over the records' values
    ok_scored = [r for r in records if r.status == "ok" and r.report is not None]
    for name, q in (("response_sequence_probability", 0.5), ("response_min_token_probability", 0.9),
                    ("response_min_token_probability", 0.1), ("response_mean_top_margin", 0.5),
                    ("response_tokens", 0.99)):
        definition = DEFINITIONS[name]
        values = [float(definition.value(r)) for r in ok_scored]  # type: ignore[arg-type]
        got = prom.query_value(f"histogram_quantile({q}, sum by (le) (llm_{name}_bucket))")
        assert got == pytest.approx(bucket_quantile(q, definition.buckets, values), rel=1e-9), name
    # every histogram has a _sum (none has a negative bucket) and no bucket bound Prometheus stored is negative
    for name, definition in DEFINITIONS.items():
        values = [float(v) for v in (definition.value(r) for r in records if r.status == "ok" or not definition.ok_only)
                  if v is not None]
        assert prom.query_value(f"sum(llm_{name}_sum)") == pytest.approx(sum(values), rel=1e-9), name
    bounds = {float(s["metric"]["le"]) for s in prom.query('{__name__=~"llm_.+_bucket"}')}
    assert bounds and min(bounds) >= 0 and 1e-6 in bounds  # the min-token-probability floor
    [ttft] = [r.time_to_first_token_seconds for r in records if r.first_token_at_ns is not None]
    assert prom.query_value("sum(llm_time_to_first_token_seconds_sum)") == pytest.approx(ttft, rel=1e-9)

    # rate, against the Prometheus extrapolation over the raw samples it scraped
    at = round(time.time(), 3)
    selector = 'llm_responses_total{status="ok",logprobs="present"}'
    [raw] = prom.query(f"{selector}[2m]", at=at)
    samples = [(float(t), float(v)) for t, v in raw["values"]]
    assert samples[-1][1] == sum(1 for r in records if r.status == "ok" and r.logprobs == "present") == 7
    assert 1 <= samples[0][1] <= 3 < samples[-1][1]  # scraped during or after the first phase
    rate = float(prom.query(f"rate({selector}[2m])", at=at)[0]["value"][1])
    assert rate > 0 and rate == pytest.approx(extrapolated_rate(samples, at, 120.0), rel=1e-9)

    # exemplars: our spans' trace ids, on the bucket each response fell in
    our_ids = {r.trace["trace_id"] for r in records if r.trace}
    span_trace_ids = {format(s.context.trace_id, "032x") for s in otel.spans()}
    assert our_ids == span_trace_ids and len(our_ids) == 10
    series = prom.query_exemplars("llm_response_sequence_probability_bucket")
    stored = {(e["labels"]["trace_id"], e["labels"]["span_id"], float(e["value"]), s["seriesLabels"]["le"])
              for s in series for e in s["exemplars"]}
    assert stored and {trace_id for trace_id, *_ in stored} <= our_ids
    last = ok_scored[-1]
    assert last.report is not None
    value = last.report.sequence_probability
    assert value is not None
    bound = next(b for b in DEFINITIONS["response_sequence_probability"].buckets if value <= b)
    assert (last.trace["trace_id"], last.trace["span_id"], value, floatToGoString(bound)) in stored
    assert {s["seriesLabels"]["model"] for s in series} == {MODEL_NAME}
    otel.shutdown()
