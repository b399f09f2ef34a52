"""The stack without Docker: Prometheus with our rules and console dashboard, plus the demo app.

``python -m tools.stack`` (or ``make stack``) starts, on 127.0.0.1 only:

- the demo (``python -m observability demo --requests 0``: a LangChain app calling the bundled
  model in rounds, or OpenAI when ``OPENAI_API_KEY`` is set) serving ``/metrics``;
- Debian's Prometheus scraping it every 2 s with exemplar storage on, evaluating
  ``deploy/prometheus/rules`` and serving the console dashboard
  ``/consoles/llm-confidence.html`` from ``deploy/prometheus/consoles``.

The demo's two deliberate failures (a stream broken off, a call with a 1 ms deadline) carry the
label ``demo_case="deliberate_error"``; this Prometheus drops those series at scrape
(``metric_relabel_configs``), so a healthy stack shows no error and raises no alert. The demo's
own terminal output and ``/metrics`` still show them.

It prints the URLs and runs until Ctrl-C or SIGTERM, then stops exactly the two processes it
started (by PID), also when one of them fails. Their logs (``demo.log``, ``prometheus.log``) and
the demo's spans stay in the folder it prints, for reading after the stop; Prometheus' data is
removed. It runs from a source checkout: the configuration
lives in ``deploy/`` beside this folder.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

from observability.demo.app import DELIBERATE_ERROR, DEMO_CASE_KEY
from observability.demo.process import ManagedProcess, ProcessStartError, free_port, port_in_use
from tools.prometheus_server import PrometheusError, PrometheusServer, scrape_job

DEPLOY_DIR = Path(__file__).resolve().parents[1] / "deploy"
DEFAULT_PROMETHEUS_PORT = 9090
DEFAULT_METRICS_PORT = 9464
CONSOLE_PATH = "/consoles/llm-confidence.html"
ALERTS_PATH = "/classic/alerts"  # Prometheus 2.42 (Debian) answers 404 at /alerts; the classic UI has it


DROP_DELIBERATE_ERRORS = {"source_labels": [DEMO_CASE_KEY], "regex": DELIBERATE_ERROR, "action": "drop"}
"""Scrape-time relabelling: the demo's deliberate failures never reach the rules or the dashboard."""


class StackError(RuntimeError):
    """The stack cannot start; the message names the fix."""


@dataclass(frozen=True)
class StackOptions:
    """``prometheus_port`` / ``metrics_port``: 0 picks a free port. ``requests``: 0 = keep going
    until stopped; N = the demo makes N calls, then keeps serving its final metrics."""

    prometheus_port: int = DEFAULT_PROMETHEUS_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    requests: int = 0
    pause: float = 5.0
    scrape_interval: str = "2s"


def deploy_paths() -> dict[str, Path]:
    """The files the stack needs from ``deploy/``; raises ``StackError`` when any is missing."""
    paths = {
        "rules": DEPLOY_DIR / "prometheus" / "rules",
        "consoles": DEPLOY_DIR / "prometheus" / "consoles",
        "console_libraries": DEPLOY_DIR / "prometheus" / "console_libraries",
    }
    missing = [str(path) for path in paths.values() if not path.is_dir()]
    if missing:
        raise StackError(f"{', '.join(missing)} not found: run the stack from a source checkout of "
                         "langchain-confidence (the configuration lives in deploy/)")
    return paths


def _port(requested: int, what: str, flag: str) -> int:
    if requested == 0:
        return free_port()
    if port_in_use(requested):
        raise StackError(f"port {requested} on 127.0.0.1 ({what}) is already in use: pass {flag} with a free "
                         "port (0 picks one), or stop what uses it")
    return requested


class Stack:
    """The demo and Prometheus, started together and stopped together (see the module docstring)."""

    def __init__(self, options: StackOptions = StackOptions()) -> None:
        self.options = options
        self.paths = deploy_paths()
        self.prometheus_port = _port(options.prometheus_port, "Prometheus", "--prometheus-port")
        self.metrics_port = _port(options.metrics_port, "the demo's /metrics", "--metrics-port")
        self.work_dir = Path(tempfile.mkdtemp(prefix="llm-stack-"))
        demo = [sys.executable, "-m", "observability", "demo", "--requests", str(options.requests),
                "--pause", f"{options.pause:g}", "--metrics-port", str(self.metrics_port), "--no-color",
                "--spans-file", str(self.work_dir / "spans.jsonl")]
        if options.requests:
            demo += ["--linger", str(7 * 24 * 3600)]  # keep serving the final figures to Prometheus
        self.demo = ManagedProcess("demo", demo, f"http://127.0.0.1:{self.metrics_port}/metrics",
                                   log_path=self.work_dir / "demo.log", startup_timeout=300)
        self.prometheus = PrometheusServer(
            port=self.prometheus_port, scrape_interval=options.scrape_interval, evaluation_interval="5s",
            scrape_configs=[{**scrape_job("llm-app", [f"127.0.0.1:{self.metrics_port}"]),
                             "metric_relabel_configs": [DROP_DELIBERATE_ERRORS]}],
            rule_files=sorted(self.paths["rules"].glob("*.rules.yml")),
            extra_args=[f"--web.console.templates={self.paths['consoles']}",
                        f"--web.console.libraries={self.paths['console_libraries']}"],
            data_dir=self.work_dir / "prometheus",
        )
        self.prometheus.log_path = self.work_dir / "prometheus.log"  # beside demo.log, kept after stop()

    @property
    def prometheus_url(self) -> str:
        return self.prometheus.url

    @property
    def console_url(self) -> str:
        return f"{self.prometheus.url}{CONSOLE_PATH}"

    @property
    def alerts_url(self) -> str:
        return f"{self.prometheus.url}{ALERTS_PATH}"

    def start(self) -> Stack:
        try:
            self.demo.start()
            self.prometheus.start()
        except (ProcessStartError, PrometheusError) as exc:
            self.stop()
            raise StackError(f"{exc}\n(logs in {self.work_dir})") from exc
        return self

    def failed(self) -> str | None:
        """Why the stack is broken (a child exited), or None while both run."""
        for process in (self.demo, self.prometheus):
            if process.process is None or process.process.poll() is not None:
                return f"{process.name} exited:\n{process.tail()}"
        return None

    def stop(self) -> None:
        """Stop Prometheus, then the demo (each by its PID); remove Prometheus' data, keep the logs."""
        try:
            self.prometheus.stop()
        finally:
            self.demo.stop()
            shutil.rmtree(self.work_dir / "prometheus", ignore_errors=True)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run(options: StackOptions, out: TextIO = sys.stdout) -> int:
    """Start the stack, print where to look, wait for Ctrl-C / SIGTERM, stop it. The exit status."""
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        out.write("starting the demo app and Prometheus on 127.0.0.1 …\n")
        out.flush()
        with Stack(options) as stack:
            out.write(
                f"console dashboard: {stack.console_url}\n"
                f"prometheus:        {stack.prometheus_url}  (alerts: {stack.alerts_url})\n"
                f"demo /metrics:     http://127.0.0.1:{stack.metrics_port}/metrics\n"
                f"pids:              demo {stack.demo.pid}, prometheus {stack.prometheus.pid}\n"
                f"logs:              {stack.work_dir}  (kept after the stack stops)\n"
                "Ctrl-C stops both.\n")
            out.flush()
            while not stopping:
                problem = stack.failed()
                if problem:
                    out.write(f"stopping: {problem}\n")
                    return 1
                time.sleep(0.5)
            out.write("stopping the demo app and Prometheus …\n")
        out.write(f"stopped. Their logs are still in {stack.work_dir} (delete the folder when done).\n")
        return 0
    except StackError as exc:
        out.write(f"error: {exc}\n")
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.stack",
        description="Run the demo app and Prometheus (rules + console dashboard) on 127.0.0.1, without Docker.")
    parser.add_argument("--prometheus-port", type=int, default=DEFAULT_PROMETHEUS_PORT, metavar="PORT",
                        help=f"Prometheus web UI and API (default {DEFAULT_PROMETHEUS_PORT}; 0 picks a free port)")
    parser.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT, metavar="PORT",
                        help=f"the demo's /metrics (default {DEFAULT_METRICS_PORT}; 0 picks a free port)")
    parser.add_argument("--requests", type=int, default=0, metavar="N",
                        help="model calls the demo makes (default 0: keep going until stopped)")
    parser.add_argument("--pause", type=float, default=5.0, metavar="SECONDS",
                        help="pause between the demo's rounds (default 5)")
    args = parser.parse_args(argv)
    for name in ("prometheus_port", "metrics_port"):
        if not 0 <= getattr(args, name) <= 65535:
            parser.error(f"--{name.replace('_', '-')} must be a TCP port (1-65535) or 0 for a free one")
    if args.requests < 0 or args.pause < 0:
        parser.error("--requests and --pause must not be negative")
    return run(StackOptions(prometheus_port=args.prometheus_port, metrics_port=args.metrics_port,
                            requests=args.requests, pause=args.pause))


if __name__ == "__main__":
    sys.exit(main())
