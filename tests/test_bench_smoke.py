"""The benchmark harness still runs: every workload once at a tiny size, no timing asserted.

The peers (OpenInference, OpenLLMetry) live only in the benchmark environment (`make bench`),
so these tests run the configurations the project environment has: no handler, a no-op
handler, ours scoring only, ours with the full exporters.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from benchmarks import configs as cfg
from benchmarks import harness, workloads
from benchmarks.__main__ import main
from benchmarks.fake_model import TOP_LOGPROBS, FakeLogprobChatModel
from benchmarks.leak import run_leak_check
from observability import ConfidenceCallbackHandler

LOCAL = [cfg.BASELINE, cfg.NOOP, cfg.SCORING, cfg.FULL]
SCOPE = "langchain-confidence"  # the instrumentation scope of our span exporter


def test_fake_model_streams_openai_shaped_logprobs_with_five_alternatives() -> None:
    model = FakeLogprobChatModel(n_tokens=12)
    chunks = list(model.stream("hi"))
    entries = [e for c in chunks for e in (c.response_metadata.get("logprobs") or {}).get("content", [])]
    assert len(entries) == 12
    assert "".join(c.content for c in chunks) == "".join(e["token"] for e in entries)  # type: ignore[misc]
    for entry in entries:
        alternatives = entry["top_logprobs"]
        assert len(alternatives) == TOP_LOGPROBS
        values = [a["logprob"] for a in alternatives]
        assert values == sorted(values, reverse=True)
        assert entry["logprob"] in values and all(v <= 0.0 for v in values)
        assert bytes(entry["bytes"]).decode() == entry["token"]
        assert sum(math.exp(v) for v in values) <= 1.0 + 1e-9
    whole = model.invoke("hi")
    assert whole.response_metadata["logprobs"]["content"] == entries
    assert whole.content == "".join(e["token"] for e in entries)


def test_every_workload_runs_once_per_configuration_and_leaves_nothing_open() -> None:
    sinks = cfg.Sinks()
    configurations = cfg.build(LOCAL, sinks)
    expected_runs = 0
    try:
        for workload in workloads.standard(scale=0.01):
            results = harness.interleave(workload, configurations, rounds=1, warmup=1)
            assert set(results) == set(LOCAL)
            for measured in results.values():
                assert len(measured.samples) == 1 and measured.samples[0].total_ns > 0
                assert measured.ratios and measured.ratios[0] > 0
            # runs per execution of the workload: one per stream, one per invoke call
            per_execution = workload.units if workload.key in ("w3", "w3c") else workload.units // workload.tokens
            expected_runs += 2 * per_execution  # warm-up + one round
        sinks.flush()
        assert sinks.span_exporter.by_scope[SCOPE] == expected_runs
        for config in configurations:
            if config.handler is not None:
                assert config.handler.open_runs == 0 and not config.handler.errors
    finally:
        sinks.shutdown()


def test_per_chunk_probe_and_floors_give_a_figure_per_round() -> None:
    sinks = cfg.Sinks()
    try:
        costs = harness.per_chunk(cfg.build(LOCAL, sinks), rounds=2, n_tokens=10)
    finally:
        sinks.shutdown()
    assert set(costs) == set(LOCAL) and all(len(v) == 2 for v in costs.values())
    assert costs[cfg.BASELINE] == [0.0, 0.0]
    for name, probe in harness.read_floor_probes(10, calls=2):
        assert name in (harness.READ_FLOOR, harness.READ_EXP_FLOOR) and probe().total_ns > 0


def test_leak_check_counts_every_kind_of_ending() -> None:
    sinks = cfg.Sinks()
    try:
        report = run_leak_check(cfg.full_exporters(sinks), runs=400, checkpoints=4)
    finally:
        sinks.shutdown()
    assert sum(report.by_kind.values()) == 400
    assert set(report.by_kind) == {"ok stream", "ok invoke", "error", "cancelled"}
    ok = report.by_kind["ok stream"] + report.by_kind["ok invoke"]
    assert report.by_status == {"ok": ok, "error": report.by_kind["error"], "cancelled": report.by_kind["cancelled"]}
    assert report.open_runs == 0 and report.open_claims == 0 and not report.handler_errors
    assert len(report.checkpoints_kib) == 4


def test_command_line_writes_a_table_with_every_configuration(tmp_path: Any, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.__main__ as cli

    results = tmp_path / "RESULTS.md"
    results.write_text("# kept prose\n\n<!-- bench:results -->\nold table\n<!-- /bench:results -->\n\nmore prose\n")
    monkeypatch.setattr(cli, "RESULTS", results)
    monkeypatch.setattr(cli, "HERE", tmp_path)
    assert main(["--scale", "0.01", "--rounds", "1", "--rounds-concurrent", "1", "--leak-runs", "100",
                 "--real-rounds", "0", "--configs", "baseline,noop,scoring,full"]) == 0
    text = results.read_text()
    assert text.startswith("# kept prose\n") and text.endswith("more prose\n") and "old table" not in text
    for name in LOCAL:
        assert f"| {name} |" in text
    assert "### Targets" in text and "### Leak check" in text and "100 runs" in text
    data = json.loads((tmp_path / "results.json").read_text())
    assert [w["key"] for w in data["workloads"]] == ["w1", "w2", "w3", "w3c", "w4"]
    assert "| no handler |" in capsys.readouterr().out


@pytest.mark.real_model
def test_real_model_workload_streams_and_times_our_callbacks(local_model: Any) -> None:
    from benchmarks.real_model import TimedHandler, real_stream

    workload, counted = real_stream(local_model.base_url, max_tokens=8)
    handler = TimedHandler(exporters=())
    records: list[Any] = []
    handler.on_report = records.append
    sample = workload.run([handler])
    assert counted and 1 <= counted[0] <= 8
    assert 0 < handler.inside_ns < sample.total_ns
    assert len(records) == 1 and records[0].report is not None
    assert records[0].report.token_count == counted[0]
    assert all(len(t.top_logprobs) == 5 for t in records[0].tokens)


def test_end_of_run_probe_and_an_older_copy_measured_in_the_same_rounds(tmp_path: Any) -> None:
    import shutil
    from pathlib import Path

    from benchmarks import before
    from benchmarks.report import before_after, end_of_run_ratio, targets

    # the current package stands in for an older tree: what is tested is the loading, not the age
    shutil.copytree(Path(cfg.__file__).resolve().parents[1] / "observability", tmp_path / "observability",
                    ignore=shutil.ignore_patterns("__pycache__"))
    old = before.load(tmp_path)
    assert old.__name__ == before.NAME and old.ConfidenceCallbackHandler is not ConfidenceCallbackHandler
    sinks, before_sinks = cfg.Sinks(), cfg.Sinks()
    try:
        configurations = cfg.build(LOCAL, sinks, before=old, before_sinks=before_sinks)
        assert [c.name for c in configurations] == [*LOCAL, *cfg.BEFORE]
        workload = workloads.invoke(20, calls=2)
        probes = [*harness.read_floor_probes(20, calls=2),
                  harness.end_of_run_probe(harness.END_OF_RUN, ConfidenceCallbackHandler, 20, calls=2),
                  harness.end_of_run_probe(harness.BEFORE_END_OF_RUN, old.ConfidenceCallbackHandler, 20, calls=2)]
        results = harness.interleave(workload, configurations, rounds=2, probes=probes)
        before_sinks.flush()
        assert sum(before_sinks.span_exporter.by_scope.values()) == 2 * 3  # warm-up + 2 rounds, 2 calls
    finally:
        sinks.shutdown()
        before_sinks.shutdown()
    data = {"before": {"label": "copy", "tree": str(tmp_path), "speedups": before.describe(old)},
            "workloads": [{"key": "w3", "title": workload.title, "configs": {
                name: {"ratio": m.ratio, "ratios": m.ratios, "median_us": m.median_us(2)}
                for name, m in results.items()}}]}
    ratio = end_of_run_ratio(data)
    assert ratio is not None and ratio > 0 and end_of_run_ratio(data, harness.BEFORE_END_OF_RUN) is not None
    assert targets(data)[0][2] == (ratio <= 2.5)
    table = "\n".join(before_after(data))
    assert "| end-of-run work ÷ floor" in table and "scoring only, before" in table
