"""``python -m observability demo`` end to end: the bundled model started by the demo itself,
Prometheus ``/metrics`` scraped while it serves, the heatmap output, clean stops.

Expected values come from outside the demo's own output where possible: the record file it
writes (``--record-to``) and the span file, compared with what ``/metrics`` and stdout show.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from observability.core.text import token_offsets
from observability.demo.process import free_port
from observability.exporters._jsonl import read_records
from tests.demo_support import demo_env, kill_tagged, new_tag, wait_until_gone

pytestmark = pytest.mark.real_model

ANSI = re.compile(r"\x1b\[[0-9;]*m")
RESPONSES = re.compile(r'^llm_responses_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)', re.M)


def scrape(port: int) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode())


def responses_by_labels(exposition: str) -> dict[tuple[str, str], float]:
    counts: dict[tuple[str, str], float] = {}
    for match in RESPONSES.finditer(exposition):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        key = (labels["status"], labels["logprobs"])
        counts[key] = counts.get(key, 0.0) + float(match["value"])
    return counts


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes], timeout: float, what: str,
             output: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the demo exited ({process.returncode}) before {what}:\n{output.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout:.0f}s:\n{output.read_text()[-3000:]}")
        time.sleep(0.5)


def start_demo(tmp_path: Path, tag: str, *args: str, **env: str) -> tuple[subprocess.Popen[bytes], Path]:
    output = tmp_path / "stdout.txt"
    with output.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "observability", "demo", *args], cwd=tmp_path,
                                   env=demo_env(tag, **env), stdout=sink, stderr=subprocess.STDOUT)
    return process, output


def stop(process: subprocess.Popen[bytes], signum: int, output: Path) -> int:
    process.send_signal(signum)
    try:
        return process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        # Where it hangs: with PYTHONFAULTHANDLER set (demo_env), SIGABRT makes Python print every
        # thread's stack into the output before it dies.
        process.send_signal(signal.SIGABRT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        pytest.fail("the demo did not stop within 120 s of the signal; its last output, with the stack "
                    "of every thread:\n" + output.read_text(errors="replace")[-6000:])


def make_demo_arguments() -> list[str]:
    """The arguments `make demo` gives ``python -m observability demo`` (the Makefile's recipe)."""
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    recipe = re.search(r"^demo: .*\n\t\$\(PY\) -m observability demo(.*)$", makefile, flags=re.M)
    assert recipe, "no `demo` target running `$(PY) -m observability demo` in the Makefile"
    return shlex.split(recipe[1])


def test_demo_runs_every_status_and_serves_metrics(tmp_path: Path) -> None:
    tag, port = new_tag(), free_port()
    spans_file = tmp_path / "spans.jsonl"
    # as `make demo` runs it (in the clone's folder; here tmp_path), plus what the test needs
    make_demo = make_demo_arguments()
    records_file = tmp_path / make_demo[make_demo.index("--record-to") + 1]
    report_file = tmp_path / make_demo[make_demo.index("--report") + 1]
    # 16 tokens an answer instead of 48: every status still shows, in a third of the generation time
    process, output = start_demo(tmp_path, tag, *make_demo, "--requests", "8", "--metrics-port", str(port),
                                 "--max-tokens", "16", "--linger", "600", "--spans-file", str(spans_file),
                                 FORCE_COLOR="1")
    try:
        wait_for(lambda: "8 requests:" in output.read_text(), process, 900, "end of the 8 requests", output)
        exposition = scrape(port)
        assert stop(process, signal.SIGTERM, output) == 0, output.read_text()[-3000:]
        assert wait_until_gone(tag) == [], "the demo left its model server behind"
    finally:
        if process.poll() is None:
            process.kill()
        kill_tagged(tag)

    records = read_records(records_file)
    assert len(records) == 8
    expected: dict[tuple[str, str], float] = {}
    for record in records:
        expected[(record.status, record.logprobs)] = expected.get((record.status, record.logprobs), 0) + 1
    assert {status for status, _ in expected} == {"ok", "cancelled", "error"}  # every status shows up
    assert responses_by_labels(exposition) == expected
    assert expected[("ok", "present")] == 6 and expected[("cancelled", "present")] == 1
    assert "# EOF" in exposition and "trace_id=" in exposition  # OpenMetrics, with exemplars

    text = output.read_text()
    assert "\x1b[38;5;16;48;5;" in text  # the coloured heatmap
    plain = ANSI.sub("", text)
    for record in records:
        if record.tokens:  # each answer printed in full, token by token
            answer = token_offsets(record.tokens)[0].replace("\n", "\n  ")
            assert answer in plain
    assert plain.count(" · smollm2-135m · ") == 8  # one summary line per response
    assert "stopped; everything the demo started is shut down." in plain
    # progress from the first line: what loads, then each request (stderr is merged in here)
    assert plain.startswith("demo: starting"), plain[:300]
    assert "progress: loading the model into llama.cpp and waiting for /health: done in" in plain
    assert "progress: [························] 0/8 requests · a plain call" in plain
    assert "still running for 600 s: the model server and /metrics at http://127.0.0.1:" in plain
    # the deliberate failures are marked, on the terminal and in the run metadata (and metric label)
    assert plain.count("(deliberate): ") == 2
    marked = {r.status: r.start.metadata.get("demo_case") for r in records if r.status != "ok"}
    assert marked == {"cancelled": "deliberate_error", "error": "deliberate_error"}
    assert all("demo_case" not in r.start.metadata for r in records if r.status == "ok")
    assert 'demo_case="deliberate_error"' in exposition
    assert [r.start.question for r in records if r.status != "ok"] == [
        "Tell me a long story about a dragon who learns to cook.", "Explain photosynthesis."]

    # the demo ends by rendering the record file as the HTML report, and names the page to open last
    assert plain.rstrip().splitlines()[-1] == (f"report: 8 responses from {records_file.name} (every run appends "
                                               f"to it); open {report_file.resolve().as_uri()}")
    page = report_file.read_text(encoding="utf-8")
    assert 'data-responses="8"' in page
    assert page.count('<section class="response"') == 8
    assert all(f'data-status="{r.status}"' in page for r in records)

    # every response's span is in the span file, under the trace id the record points at
    span_trace_ids = {json.loads(line)["context"]["trace_id"].removeprefix("0x")
                      for line in spans_file.read_text().splitlines() if line.strip()}
    assert {r.trace["trace_id"] for r in records} <= span_trace_ids


def test_demo_loops_until_interrupted(tmp_path: Path) -> None:
    tag, port = new_tag(), free_port()
    process, output = start_demo(tmp_path, tag, "--requests", "0", "--pause", "0.5", "--metrics-port", str(port),
                                 "--no-color", "--max-tokens", "8", "--spans-file", str(tmp_path / "spans.jsonl"))
    try:
        wait_for(lambda: output.read_text().count("▸ ") >= 2, process, 900, "two responses", output)
        assert stop(process, signal.SIGINT, output) == 0, output.read_text()[-3000:]
        assert wait_until_gone(tag) == [], "the demo left its model server behind"
    finally:
        if process.poll() is None:
            process.kill()
        kill_tagged(tag)
    text = output.read_text()
    assert "progress: 0 requests · a plain call" in text  # no total in loop mode
    assert "stopped; everything the demo started is shut down." in text
    assert "Traceback" not in text


@pytest.mark.real_backend
def test_demo_sends_spans_over_otlp_to_phoenix(tmp_path: Path) -> None:
    from tests.backends import PhoenixServer
    from tests.conftest import start_or_fail

    phoenix = PhoenixServer()
    tag = new_tag()
    try:
        start_or_fail(phoenix, "Phoenix")
        records_file = tmp_path / "records.jsonl"
        result = subprocess.run(
            [sys.executable, "-m", "observability", "demo", "--requests", "2", "--metrics-port", "0", "--no-color",
             "--max-tokens", "12", "--record-to", str(records_file)],
            cwd=tmp_path, capture_output=True, text=True, timeout=900,
            env=demo_env(tag, OTEL_EXPORTER_OTLP_ENDPOINT=phoenix.url, OTEL_METRICS_EXPORTER="none"))
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"spans:   OTLP/HTTP to {phoenix.url}" in result.stdout
        # the closing line, printed after the clean-up, says what is closed and how to keep /metrics up
        assert re.fullmatch(r"demo finished: the model server and /metrics at http://127\.0\.0\.1:\d+/metrics are "
                            r"now closed \(run with --linger 600 to keep /metrics up for 10 minutes after the "
                            r"requests\)\.", result.stdout.splitlines()[-1]), result.stdout[-500:]
        assert not (tmp_path / "demo-spans.jsonl").exists()  # no local span file when OTLP is set
        assert wait_until_gone(tag) == []
        wanted = {r.trace["trace_id"] for r in read_records(records_file)}
        assert len(wanted) == 2
        deadline = time.monotonic() + 60
        while True:
            spans = json.dumps(phoenix.spans("langchain-confidence-demo"))
            if all(trace_id in spans for trace_id in wanted) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert all(trace_id in spans for trace_id in wanted), spans[:2000]
    finally:
        phoenix.stop()
        kill_tagged(tag)
