"""The Grafana dashboard "LLM confidence", as code.

``python deploy/grafana/dashboard.py`` writes ``deploy/grafana/dashboards/llm-confidence.json``;
``--check`` exits 1 when the committed file differs from what this script builds. The JSON follows
the dashboard schema of the Grafana version pinned in docker-compose.yml and package.json (checked
with ``tsc`` against ``@grafana/schema`` by tests/test_deploy_grafana.py).

Standard library only. Queries use the default metric prefix ``llm`` and the panel variables
``$provider`` and ``$model``; every query is executed against a real Prometheus by
tests/test_deploy_live.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

GRAFANA_VERSION = "12.3.3"
SCHEMA_VERSION = 42  # the dashboard schema version Grafana 12.3 writes
OUTPUT = Path(__file__).resolve().parent / "dashboards" / "llm-confidence.json"

PROMETHEUS = {"type": "prometheus", "uid": "prometheus"}
"""The provisioned Prometheus data source (deploy/grafana/provisioning/datasources)."""

SELECT = 'provider=~"$provider", model=~"$model"'
"""Label matchers every query carries, driven by the two dashboard variables."""

Json = dict[str, Any]


def target(ref: str, expr: str, legend: str = "", *, exemplar: bool = False, instant: bool = False,
           fmt: str = "time_series") -> Json:
    """One PromQL query of a panel."""
    return {
        "datasource": PROMETHEUS,
        "refId": ref,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "exemplar": exemplar,
        "format": fmt,
    }


def quantiles(metric: str, by: str = "") -> list[Json]:
    """p10 / p50 / p90 of a histogram over the dashboard's rate interval, with exemplars."""
    group = f"{by}, le" if by else "le"
    return [
        target(ref, f"histogram_quantile({q}, sum by ({group}) "
                    f"(rate({metric}_bucket{{{SELECT}}}[$__rate_interval])))",
               f"p{int(q * 100)}", exemplar=True)
        for ref, q in (("A", 0.1), ("B", 0.5), ("C", 0.9))
    ]


def mean(metric: str, window: str = "$__rate_interval", by: str = "") -> str:
    """Mean of a histogram's observations: rate(_sum) / rate(_count) (valid for values ≥ 0)."""
    grouping = f" by ({by})" if by else ""
    return (f"sum{grouping} (rate({metric}_sum{{{SELECT}}}[{window}])) / "
            f"sum{grouping} (rate({metric}_count{{{SELECT}}}[{window}]))")


def share(matcher: str, window: str = "$__rate_interval", by: str = "", among: str = "") -> str:
    """Share of responses matching ``matcher`` among those matching ``among`` (default: all), 0 when none
    do rather than no data."""
    grouping = f" by ({by})" if by else ""
    base = f"{among}, {SELECT}" if among else SELECT
    total = f"sum{grouping} (rate(llm_responses_total{{{base}}}[{window}]))"
    return f"(sum{grouping} (rate(llm_responses_total{{{matcher}, {base}}}[{window}])) or {total} * 0) / {total}"


def color_override(name: str, color: str) -> Json:
    return {"matcher": {"id": "byName", "options": name},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}}]}


def thresholds(*steps: tuple[float | None, str]) -> Json:
    return {"mode": "absolute", "steps": [{"value": value, "color": color} for value, color in steps]}


def timeseries(title: str, description: str, targets: list[Json], *, unit: str, minimum: float | None = None,
               maximum: float | None = None, overrides: list[Json] | None = None, stack: bool = False,
               legend_calcs: list[str] | None = None) -> Json:
    defaults: Json = {
        "unit": unit,
        "color": {"mode": "palette-classic"},
        "custom": {
            "drawStyle": "line",
            "lineInterpolation": "linear",
            "lineWidth": 2,
            "fillOpacity": 20 if stack else 0,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            "axisPlacement": "auto",
        },
    }
    if minimum is not None:
        defaults["custom"]["axisSoftMin"] = minimum
    if maximum is not None:
        defaults["custom"]["axisSoftMax"] = maximum
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": PROMETHEUS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {"showLegend": True, "displayMode": "table" if legend_calcs else "list",
                       "placement": "bottom", "calcs": legend_calcs or []},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(title: str, description: str, expr: str, *, unit: str, steps: Json, decimals: int = 1) -> Json:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": PROMETHEUS,
        "targets": [target("A", expr, title)],
        "fieldConfig": {"defaults": {"unit": unit, "decimals": decimals, "thresholds": steps,
                                     "color": {"mode": "thresholds"}}, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "value",
            "wideLayout": True,
            "showPercentChange": False,
            "percentChangeColorMode": "standard",
        },
    }


def sequence_probability_heatmap() -> Json:
    return {
        "type": "heatmap",
        "title": "Sequence probability distribution",
        "description": "How many responses fell in each sequence-probability bucket (exp(mean token logprob), the "
                       "geometric-mean token probability; 1 = the model was sure of every token). A band moving "
                       "down means answers got less certain. Perplexity is 1 / sequence probability: the bucket "
                       "le=0.5 holds the answers of perplexity 2 and more. Exemplars link a cell to the trace of "
                       "a response in it.",
        "datasource": PROMETHEUS,
        "targets": [target("A", f"sum by (le) (increase(llm_response_sequence_probability_bucket{{{SELECT}}}"
                                f"[$__rate_interval]))", "{{le}}", exemplar=True, fmt="heatmap")],
        "fieldConfig": {"defaults": {"custom": {"hideFrom": {"legend": False, "tooltip": False, "viz": False},
                                                "scaleDistribution": {"type": "linear"}}},
                        "overrides": []},
        "options": {
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark-orange", "scale": "exponential",
                      "exponent": 0.5, "steps": 64, "reverse": False},
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "filterValues": {"le": 1e-9},
            "legend": {"show": True},
            "rowsFrame": {"layout": "le"},
            "showValue": "never",
            "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
            "yAxis": {"axisPlacement": "left", "reverse": False, "unit": "percentunit", "decimals": 1},
        },
    }


Column = tuple[str, str, str, str]
"""One column of a table panel: query refId, header, PromQL (an instant query), unit."""


def table(title: str, description: str, columns: list[Column], *, overrides: list[Json], sort_by: str,
          descending: bool = True, renames: dict[str, str] | None = None) -> Json:
    """One row per label set the instant queries share (merged on their labels), a column per query."""
    rename = {f"Value #{ref}": name for ref, name, _, _ in columns} | (renames or {})
    units = [{"matcher": {"id": "byName", "options": name},
              "properties": [{"id": "unit", "value": unit}, {"id": "decimals", "value": 2}]}
             for _, name, _, unit in columns]
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": PROMETHEUS,
        "targets": [target(ref, expr, name, instant=True, fmt="table") for ref, name, expr, _ in columns],
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True}, "renameByName": rename,
                                           "indexByName": {}}},
        ],
        "fieldConfig": {"defaults": {"custom": {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False}},
                        "overrides": units + overrides},
        "options": {"showHeader": True, "cellHeight": "sm", "frameIndex": 0,
                    "sortBy": [{"displayName": sort_by, "desc": descending}]},
    }


def per_model_table() -> Json:
    window = "$__range"
    columns: list[Column] = [
        ("A", "Responses / s", f"sum by (model) (rate(llm_responses_total{{{SELECT}}}[{window}]))", "reqps"),
        ("B", "Median sequence probability",
         f"histogram_quantile(0.5, sum by (model, le) (rate(llm_response_sequence_probability_bucket{{{SELECT}}}"
         f"[{window}])))", "percentunit"),
        ("C", "p10 min token probability",
         f"histogram_quantile(0.1, sum by (model, le) (rate(llm_response_min_token_probability_bucket{{{SELECT}}}"
         f"[{window}])))", "percentunit"),
        ("D", "Mean low-confidence ratio", mean("llm_response_low_confidence_ratio", window, "model"), "percentunit"),
        ("E", "Mean sequence probability", mean("llm_response_sequence_probability", window, "model"),
         "percentunit"),
        ("F", "Without logprobs", share('logprobs!="present"', window, "model", among='status="ok"'), "percentunit"),
        ("G", "Errors", share('status="error"', window, "model"), "percentunit"),
    ]
    loud = [{"matcher": {"id": "byName", "options": name}, "properties": [
        {"id": "thresholds", "value": thresholds((None, "green"), (0.001, "red"))},
        {"id": "custom.cellOptions", "value": {"type": "color-background"}},
    ]} for name in ("Without logprobs", "Errors")]
    return table("Per-model comparison",
                 "One row per model over the whole time range: traffic, typical and worst-case confidence, "
                 "the mean sequence probability (what the LLMConfidenceDrop alert compares), the share of "
                 "answers without logprobs and of errors (red when not zero).",
                 columns, overrides=loud, sort_by="Responses / s")


CONFIDENCE_BUCKETS = tuple(f"{tenth / 10:.1f}" for tenth in range(10))
"""The ``confidence`` label of ``llm_feedback_total``: the response's sequence probability in ten
equal-width buckets, named by lower bound (``none``, a response without a score, is left out here)."""


def bucket_midpoints() -> str:
    """Each bucket's midpoint as a series labelled with the bucket: the accuracy a calibrated figure
    promises there (the same table as the recording rule confidence:llm_feedback_expected_accuracy:midpoint)."""
    return " or ".join(f'label_replace(vector({float(bucket) + 0.05:.2f}), "confidence", "{bucket}", "", "")'
                       for bucket in CONFIDENCE_BUCKETS)


def reliability_table() -> Json:
    """Accuracy per confidence bucket over the time range: a live reliability diagram, as a table."""
    def verdicts(matcher: str = "") -> str:
        return (f'sum by (confidence) (increase(llm_feedback_total{{{matcher}confidence!="none", {SELECT}}}'
                f"[$__range]))")

    judged = f"({verdicts()} > 0)"  # buckets with a verdict in the range; the others have no accuracy
    correct = verdicts('outcome="correct", ')
    observed = f"({correct} or {judged} * 0) / {judged}"
    columns: list[Column] = [
        ("A", "Observed accuracy", observed, "percentunit"),
        ("B", "Expected (bucket midpoint)", f"({bucket_midpoints()}) and on (confidence) {judged}", "percentunit"),
        ("C", "Gap (observed − expected)", f"{observed} - ({bucket_midpoints()})", "percentunit"),
        ("D", "Verdicts", judged, "short"),
    ]
    styles: list[Json] = [
        {"matcher": {"id": "byName", "options": "Observed accuracy"}, "properties": [
            {"id": "min", "value": 0}, {"id": "max", "value": 1},
            {"id": "color", "value": {"mode": "continuous-RdYlGr"}},
            {"id": "custom.cellOptions", "value": {"type": "gauge", "mode": "basic"}}]},
        {"matcher": {"id": "byName", "options": "Gap (observed − expected)"}, "properties": [
            {"id": "thresholds", "value": thresholds((None, "red"), (-0.15, "orange"), (-0.05, "green"))},
            {"id": "custom.cellOptions", "value": {"type": "color-text"}}]},
        {"matcher": {"id": "byName", "options": "Verdicts"}, "properties": [{"id": "decimals", "value": 0}]},
    ]
    return table("Accuracy per confidence bucket",
                 "A live reliability diagram: verdicts sent with handler.record_feedback(run_id, correct), grouped "
                 "by the judged response's sequence probability (buckets 0.0–0.1 … 0.9–1.0, named by lower bound), "
                 "over the time range. Observed accuracy is the share judged correct; a calibrated figure would "
                 "match the bucket's midpoint. A negative gap means answers that sure were wrong more often than "
                 "their confidence says (orange below −0.05, red below −0.15). Verdicts on responses without a "
                 "score (confidence=\"none\") are left out. The LLMCalibrationDrift alert watches the "
                 "verdict-weighted mean of the gaps' sizes.",
                 columns, overrides=styles, sort_by="Confidence bucket", renames={"confidence": "Confidence bucket"})


def panels() -> list[Json]:
    """All panels, laid out on Grafana's 24-column grid, top to bottom."""
    rate = f"rate(llm_responses_total{{{SELECT}}}[$__rate_interval])"
    red_above_zero = thresholds((None, "green"), (0.001, "red"))
    layout: list[tuple[Json, int, int, int, int]] = [
        # -- headline numbers ---------------------------------------------------------------------
        (stat("Responses / s", "Model responses per second (all statuses).", f"sum({rate})",
              unit="reqps", steps=thresholds((None, "blue")), decimals=2), 0, 0, 4, 4),
        (stat("Responses without logprobs",
              "Share of answered (status ok) responses that carried no logprobs: their confidence is not "
              "measured. Any value above zero is a misconfiguration (logprobs not requested, or dropped by the "
              "provider/API path). Failed calls never carry logprobs and are not counted here.",
              share('logprobs!="present"', among='status="ok"'), unit="percentunit", steps=red_above_zero),
         4, 0, 5, 4),
        (stat("Errors", "Share of model calls that raised.", share('status="error"'), unit="percentunit",
              steps=thresholds((None, "green"), (0.05, "red"))), 9, 0, 5, 4),
        (stat("Cancelled", "Share of model calls broken off (streams the app stopped reading).",
              share('status="cancelled"'), unit="percentunit",
              steps=thresholds((None, "green"), (0.25, "orange"))), 14, 0, 5, 4),
        (stat("Median sequence probability",
              "Median over responses of the geometric-mean token probability (exp(mean logprob)); "
              "1 / this is the median perplexity.",
              f"histogram_quantile(0.5, sum by (le) (rate(llm_response_sequence_probability_bucket{{{SELECT}}}"
              f"[$__rate_interval])))", unit="percentunit",
              steps=thresholds((None, "red"), (0.5, "orange"), (0.8, "green"))), 19, 0, 5, 4),
        # -- traffic --------------------------------------------------------------------------------
        (timeseries("Response rate by status",
                    "Responses per second by how the run ended: ok, error (the call raised), cancelled.",
                    [target("A", f"sum by (status) ({rate})", "{{status}}")], unit="reqps", minimum=0, stack=True,
                    overrides=[color_override("ok", "green"), color_override("error", "red"),
                               color_override("cancelled", "orange")]), 0, 4, 12, 8),
        (timeseries("Response rate by logprobs status",
                    "present: scored. not_requested: the call did not ask for logprobs (bind logprobs=True). "
                    "not_returned: asked, none came back (provider or Responses API path). Anything but "
                    "present is shown in orange/red: confidence is blind there.",
                    [target("A", f"sum by (logprobs) ({rate})", "{{logprobs}}")], unit="reqps", minimum=0,
                    stack=True, overrides=[color_override("present", "green"),
                                           color_override("not_requested", "orange"),
                                           color_override("not_returned", "red")]), 12, 4, 12, 8),
        # -- confidence -----------------------------------------------------------------------------
        (timeseries("Sequence probability (p10 / p50 / p90)",
                    "Per response: exp(mean token logprob), the geometric-mean token probability. p10 is the "
                    "least confident tenth of answers. Dots are exemplars: click one to open its trace.",
                    quantiles("llm_response_sequence_probability"), unit="percentunit", minimum=0, maximum=1),
         0, 12, 12, 9),
        (timeseries("Min token probability (p10 / p50 / p90)",
                    "Per response: the probability of its least likely token — the single weakest point of "
                    "the answer. Dots are exemplars linking to the trace.",
                    quantiles("llm_response_min_token_probability"), unit="percentunit", minimum=0, maximum=1),
         12, 12, 12, 9),
        (timeseries("Low-confidence ratio",
                    "Share of an answer's tokens below the low-confidence threshold: mean over responses and "
                    "the p90 answer. Dots are exemplars linking to the trace.",
                    [target("A", mean("llm_response_low_confidence_ratio"), "mean"),
                     target("B", "histogram_quantile(0.9, sum by (le) (rate(llm_response_low_confidence_ratio_bucket"
                                 f"{{{SELECT}}}[$__rate_interval])))", "p90", exemplar=True)],
                    unit="percentunit", minimum=0, maximum=1), 0, 21, 12, 9),
        (sequence_probability_heatmap(), 12, 21, 12, 9),
        # -- per model ------------------------------------------------------------------------------
        (per_model_table(), 0, 30, 12, 9),
        (timeseries("Median sequence probability by model",
                    "The p50 of sequence probability per model, to compare models (or versions) over time.",
                    [target("A", "histogram_quantile(0.5, sum by (model, le) (rate(llm_response_sequence_probability"
                                 f"_bucket{{{SELECT}}}[$__rate_interval])))", "{{model}}", exemplar=True)],
                    unit="percentunit", minimum=0, maximum=1, legend_calcs=["mean", "min"]), 12, 30, 12, 9),
        # -- latency and answer shape ---------------------------------------------------------------
        (timeseries("Time to first token (p50 / p90 / p99)",
                    "Streamed responses: seconds from the start of the model run to its first chunk "
                    "(OpenTelemetry: gen_ai.client.operation.time_to_first_chunk).",
                    [target(ref, f"histogram_quantile({q}, sum by (le) (rate(llm_time_to_first_token_seconds_bucket"
                                 f"{{{SELECT}}}[$__rate_interval])))", f"p{round(q * 100)}", exemplar=True)
                     for ref, q in (("A", 0.5), ("B", 0.9), ("C", 0.99))], unit="s", minimum=0), 0, 39, 12, 8),
        (timeseries("Token entropy and top margin (mean)",
                    "Mean entropy of each token's returned alternatives (nats; higher = more hesitation) and "
                    "mean margin between the two best alternatives (right axis; lower = closer calls).",
                    [target("A", mean("llm_response_mean_token_entropy"), "entropy (nats)"),
                     target("B", mean("llm_response_mean_top_margin"), "top margin")],
                    unit="none", minimum=0,
                    overrides=[{"matcher": {"id": "byName", "options": "top margin"}, "properties": [
                        {"id": "custom.axisPlacement", "value": "right"}, {"id": "unit", "value": "percentunit"},
                        {"id": "max", "value": 1}]}]), 12, 39, 12, 8),
        # -- acting on confidence -------------------------------------------------------------------
        (timeseries("Confidence gate: fallback rate",
                    "Share of confidence_fallback decisions that ran the fallback, per gate (0 when none did). "
                    "Decisions with no logprobs count as missing, not as fallbacks.",
                    [target("A", f'(sum by (gate) (rate(llm_confidence_gate_decisions_total{{outcome="fell_back", '
                                 f'{SELECT}}}[$__rate_interval])) or sum by (gate) (rate('
                                 f"llm_confidence_gate_decisions_total{{{SELECT}}}[$__rate_interval])) * 0) / sum by "
                                 f"(gate) (rate(llm_confidence_gate_decisions_total{{{SELECT}}}[$__rate_interval]))",
                            "{{gate}}")],
                    unit="percentunit", minimum=0, maximum=1), 0, 47, 12, 8),
        (reliability_table(), 12, 47, 12, 8),
    ]
    built = []
    for number, (panel, x, y, w, h) in enumerate(layout, start=1):
        built.append({"id": number, "gridPos": {"x": x, "y": y, "w": w, "h": h}, **panel})
    return built


def variable(name: str, label: str, query: str) -> Json:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": PROMETHEUS,
        "query": query,
        "refresh": 2,  # on time range change: new models appear without a reload
        "sort": 1,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "regex": "",
        "hide": 0,
        "skipUrlSync": False,
    }


def dashboard() -> Json:
    return {
        "uid": "llm-confidence",
        "title": "LLM confidence",
        "description": "Confidence of model responses from token logprobs (langchain-confidence): how sure the "
                       "model was, where logprobs are missing, errors and latency, per provider and model.",
        "tags": ["llm", "langchain", "confidence"],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "links": [],
        "annotations": {"list": [
            # Firing alerts of deploy/prometheus/rules as annotations on every panel.
            {"name": "LLM alerts", "enable": True, "hide": False, "iconColor": "red", "datasource": PROMETHEUS,
             "target": {"refId": "Anno", "expr": 'ALERTS{alertname=~"LLM.+", alertstate="firing"}',
                        "titleFormat": "{{alertname}}", "textFormat": "{{provider}}/{{model}}", "step": "30s",
                        "useValueForTime": False}},
        ]},
        "templating": {"list": [
            variable("provider", "Provider", "label_values(llm_responses_total, provider)"),
            variable("model", "Model", 'label_values(llm_responses_total{provider=~"$provider"}, model)'),
        ]},
        "panels": panels(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date: run `python {Path(__file__).as_posix()}`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
