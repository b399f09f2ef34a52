"""The stack without Docker: ``python -m tools.stack`` starts Prometheus (rules + console
dashboard) and the demo app on loopback; after real traffic the console dashboard is loaded in
headless Chromium, its rendered page is read and a screenshot kept in tests/artifacts/; then the
stack is stopped with SIGTERM and every process it started must be gone.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

from observability.demo.process import ManagedProcess, free_port
from tests.conftest import running
from tests.deploy_support import ARTIFACTS, REPO, chromium, prometheus_query

pytestmark = [pytest.mark.real_model, pytest.mark.real_backend]


@dataclass
class RunningStack:
    process: ManagedProcess
    prometheus_url: str
    metrics_port: int

    @property
    def console_url(self) -> str:
        return f"{self.prometheus_url}/consoles/llm-confidence.html"

    def pids(self) -> dict[str, int]:
        """The PIDs the stack printed, plus the model server the demo started (its child)."""
        match = re.search(r"pids:\s+demo (\d+), prometheus (\d+)", self.process.tail(20000))
        assert match, self.process.tail()
        pids = {"demo": int(match[1]), "prometheus": int(match[2])}
        children = Path(f"/proc/{pids['demo']}/task/{pids['demo']}/children")
        for number, child in enumerate(children.read_text().split() if children.exists() else []):
            pids[f"demo child {number}"] = int(child)
        return pids


def _wait(condition: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not callable(check) or not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {condition}", pytrace=False)
        time.sleep(1)


def _listening(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:port (a bind test would also see TIME_WAIT sockets)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))  # a zombie has exited


@pytest.fixture(scope="module")
def stack() -> Iterator[RunningStack]:
    prometheus_port, metrics_port = free_port(), free_port()
    while metrics_port == prometheus_port:
        metrics_port = free_port()
    url = f"http://127.0.0.1:{prometheus_port}"
    process = ManagedProcess(
        "stack", [sys.executable, "-m", "tools.stack", "--prometheus-port", str(prometheus_port),
                  "--metrics-port", str(metrics_port), "--pause", "1"],
        f"{url}/consoles/llm-confidence.html", cwd=REPO, startup_timeout=300)
    try:
        for started in running(process, "the stack"):
            yield RunningStack(started, url, metrics_port)
    finally:  # the stack keeps its logs after it stops (for the user to read); the test removes them
        logs = re.search(r"^logs:\s+(\S+)", process.tail(20000), flags=re.M)
        if logs:
            shutil.rmtree(logs[1], ignore_errors=True)


def _has(url: str, promql: str) -> bool:
    result = prometheus_query(url, promql)
    return bool(result) and all(series["value"][1] not in ("NaN", "0") for series in result)


def _demo_metrics(port: int) -> str:
    with __import__("urllib.request").request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        return str(r.read().decode())


def test_stack_scrapes_the_demo_and_loads_the_rules(stack: RunningStack) -> None:
    # Until the demo's second round, so answers have been counted after their series' first scrape
    # (rate() needs two samples) and a streamed answer gave a time to first token.
    for expr in ('sum(increase(llm_responses_total{status="ok"}[5m]))',
                 "histogram_quantile(0.5, sum by (le) (rate(llm_time_to_first_token_seconds_bucket[5m])))"):
        _wait(expr, lambda expr=expr: _has(stack.prometheus_url, expr), timeout=420)
    # The demo did make its deliberate failures (its own /metrics shows them, labelled), and only those.
    def failed() -> list[dict[str, str]]:
        samples = [(dict(re.findall(r'(\w+)="([^"]*)"', m[1])), float(m[2])) for m in re.finditer(
            r"^llm_responses_total\{([^}]*)\} ([0-9.e+]+)", _demo_metrics(stack.metrics_port), re.M)]
        return [labels for labels, value in samples if labels["status"] in ("error", "cancelled") and value > 0]

    _wait("the demo's deliberate failures", lambda: {labels["status"] for labels in failed()} == {
        "error", "cancelled"}, timeout=420)
    assert all(labels.get("demo_case") == "deliberate_error" for labels in failed()), failed()
    time.sleep(5)  # a few more scrapes and rule evaluations after them
    # ... and the stack's Prometheus left them out: no error, no cancelled answer, no alert.
    assert prometheus_query(stack.prometheus_url, 'llm_responses_total{status=~"error|cancelled"}') == []
    assert prometheus_query(stack.prometheus_url, 'llm_responses_total{demo_case="deliberate_error"}') == []
    assert prometheus_query(stack.prometheus_url, 'ALERTS{alertname=~"LLM.+"}') == []
    targets = prometheus_query(stack.prometheus_url, 'up{job="llm-app"}')
    assert [t["metric"]["instance"] for t in targets] == [f"127.0.0.1:{stack.metrics_port}"]
    with __import__("urllib.request").request.urlopen(f"{stack.prometheus_url}/api/v1/rules", timeout=30) as r:
        rules = __import__("json").load(r)["data"]["groups"]
    assert {rule["name"] for group in rules for rule in group["rules"]} >= {"LLMConfidenceDrop", "LLMErrorRateHigh"}


class _Page(HTMLParser):
    """Collects the text of the console page by element id / class of interest."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[dict[str, str]] = []
        self.text: dict[str, list[str]] = {"card": [], "per-model": [], "llm-error": [], "alerts": []}
        self.graphs: list[str] = []
        self.alarms = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        self.alarms += "alarm" in attributes.get("class", "").split()
        if "llm-graph" in attributes.get("class", "").split():
            self.graphs.append(attributes.get("data-series", "missing"))
        if tag not in {"br", "img", "input", "meta", "link", "circle", "line", "polyline", "i"}:
            self.stack.append(attributes)

    def handle_endtag(self, tag: str) -> None:
        if tag not in {"br", "img", "input", "meta", "link", "circle", "line", "polyline", "i"} and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if not data.strip():
            return
        for attributes in self.stack:
            for key in self.text:
                if attributes.get("id") == key or key in attributes.get("class", "").split():
                    self.text[key].append(data.strip())


def test_console_dashboard_renders_values_in_chromium(stack: RunningStack) -> None:
    test_stack_scrapes_the_demo_and_loads_the_rules(stack)  # wait for the traffic when run alone
    url = f"{stack.console_url}?range_minutes=5"
    page = _Page()
    dom = chromium(url)
    page.feed(dom)
    shown = re.sub(r"<(script|style)\b.*?</\1>", "", dom, flags=re.S)  # what the page shows, not its code
    for failure in ("error executing template", "query failed", "bad_data", "parse error"):
        assert failure not in shown, f"the rendered page shows {failure!r}"
    assert page.text["llm-error"] == []  # no graph reported an error
    cards = " ".join(page.text["card"])
    assert "no data" not in cards, cards
    assert re.search(r"Responses / s last 1 min \d+\.\d\d/s", cards), cards
    assert re.search(r"Median sequence probability last 2 min 0\.\d{3}", cards), cards
    assert re.search(r"Errors last 1 min (0%|–)", cards), cards  # the deliberate failures are left out
    assert page.alarms == 0, "a healthy stack shows no red card"
    assert " ".join(page.text["alerts"]).endswith("No LLM alert is pending or firing."), page.text["alerts"]
    row = " ".join(page.text["per-model"])
    assert "smollm2-135m" in row and "openai" in row, row
    assert "no data" not in row, row  # every column of the model's row has a value
    assert len(page.graphs) == 6
    assert all(series.isdigit() and int(series) >= 1 for series in page.graphs), page.graphs
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "console-dashboard.html").write_text(dom, encoding="utf-8")
    shot = ARTIFACTS / "console-dashboard.png"
    shot.unlink(missing_ok=True)
    chromium(url, screenshot=shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 50_000  # a page of text and graphs, not a blank image


def test_sigterm_stops_everything_the_stack_started(stack: RunningStack) -> None:
    pids = stack.pids()
    assert len(pids) >= 3, pids  # demo, its model server, prometheus
    assert all(_alive(pid) for pid in pids.values()), pids
    process = stack.process.process
    assert process is not None
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the stack did not stop within 90 s of SIGTERM:\n{stack.process.tail()}", pytrace=False)
    took = time.monotonic() - started
    output = stack.process.tail()
    assert code == 0, output
    # the log folder it printed is still there after the stop, with both logs (issue 30)
    logs = re.search(r"^logs:\s+(\S+)  \(kept after the stack stops\)$", output, flags=re.M)
    assert logs, output
    assert f"stopped. Their logs are still in {logs[1]} (delete the folder when done)." in output
    folder = Path(logs[1])
    assert (folder / "demo.log").stat().st_size > 0 and (folder / "prometheus.log").is_file()
    assert not (folder / "prometheus").exists()  # Prometheus' data is removed
    _wait("the stack's processes to exit", lambda: not any(_alive(pid) for pid in pids.values()), timeout=30)
    assert not _listening(int(stack.prometheus_url.rsplit(":", 1)[1]))
    assert not _listening(stack.metrics_port)
    print(f"stack stopped {took:.1f}s after SIGTERM")
