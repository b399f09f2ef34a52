"""A real Prometheus server in a child process, for tests, the demo and the no-Docker stack.

``PrometheusServer`` writes its own config to a temporary directory, runs Debian's
``/usr/bin/prometheus`` (or ``$PROMETHEUS_BIN``) bound to 127.0.0.1 on a free port with its own
``--storage.tsdb.path`` and ``--enable-feature=exemplar-storage``, waits for ``/-/ready`` and stops
exactly that process (by PID). ``query`` / ``query_range`` / ``query_exemplars`` / ``wait_for``
read its HTTP API with urllib only.

The config is written as JSON, which YAML parsers (Prometheus's included) accept as YAML.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from observability.demo.process import ManagedProcess, ProcessStartError, free_port, port_in_use

PROMETHEUS_BIN_ENV = "PROMETHEUS_BIN"
"""Path of the ``prometheus`` binary; default ``/usr/bin/prometheus``, then ``$PATH``."""

_INSTALL_HINT = "install it with `apt-get install -y --no-install-recommends prometheus` (or `make deps`)"


class PrometheusError(RuntimeError):
    """Prometheus could not be started, or its API answered with an error."""


def prometheus_binary() -> str:
    """The Prometheus executable to run; raises ``PrometheusError`` naming the install step."""
    configured = os.environ.get(PROMETHEUS_BIN_ENV)
    if configured:
        if not os.access(configured, os.X_OK):
            raise PrometheusError(f"${PROMETHEUS_BIN_ENV}={configured} is not an executable file")
        return configured
    for candidate in ("/usr/bin/prometheus", shutil.which("prometheus")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise PrometheusError(f"prometheus is not installed: {_INSTALL_HINT}")


def scrape_job(name: str, targets: Sequence[str], *, metrics_path: str = "/metrics",
               scrape_interval: str | None = None, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One ``scrape_configs`` entry: ``targets`` are ``host:port`` strings."""
    job: dict[str, Any] = {
        "job_name": name,
        "metrics_path": metrics_path,
        "static_configs": [{"targets": list(targets), "labels": dict(labels or {})}],
    }
    if scrape_interval is not None:
        job["scrape_interval"] = scrape_interval
    return job


class PrometheusServer(ManagedProcess):
    """Prometheus on 127.0.0.1 scraping the given targets.

    ``targets``: ``host:port`` strings scraped as job ``app`` at ``scrape_interval``.
    ``scrape_configs``: extra full job entries (see ``scrape_job``). ``rule_files``: paths of
    recording/alerting rule files (referenced, not copied). ``extra_args``: more command-line flags
    (e.g. ``--web.console.templates=...``). ``data_dir``: where config and TSDB live; a fresh
    temporary directory (removed on ``stop()``) when not given.
    """

    def __init__(self, targets: Sequence[str] = (), *, port: int | None = None,
                 scrape_interval: str = "1s", evaluation_interval: str = "1s",
                 scrape_configs: Sequence[Mapping[str, Any]] = (), rule_files: Sequence[str | Path] = (),
                 extra_args: Sequence[str] = (), data_dir: str | Path | None = None,
                 startup_timeout: float = 60.0) -> None:
        if port is not None and port_in_use(port):
            raise PrometheusError(f"port {port} on 127.0.0.1 is already in use: choose another port")
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="prometheus-"))
        self.config_path = self.data_dir / "prometheus.yml"
        jobs: list[dict[str, Any]] = [dict(job) for job in scrape_configs]
        if targets:
            jobs.insert(0, scrape_job("app", targets))
        self.config: dict[str, Any] = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval,
                       "scrape_timeout": scrape_interval},
            "rule_files": [str(Path(path).resolve()) for path in rule_files],
            "scrape_configs": jobs,
        }
        command = [
            "<prometheus>",  # resolved in start(), so a missing binary fails with the install hint there
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--enable-feature=exemplar-storage",
            "--web.enable-lifecycle",
            "--log.level=warn",
            *extra_args,
        ]
        super().__init__("prometheus", command, f"{self.url}/-/ready", cwd=self.data_dir,
                         startup_timeout=startup_timeout)

    @property
    def url(self) -> str:
        """Base URL of the web UI and HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        self.command[0] = prometheus_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config, indent=2))
        try:
            super().start()
        except ProcessStartError as exc:
            raise PrometheusError(str(exc)) from exc
        return self

    def stop(self) -> None:
        super().stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def reload(self) -> None:
        """Re-read the config file (after editing ``self.config``: call ``write_config()`` first)."""
        self._request("/-/reload", method="POST", raw=True)

    def write_config(self) -> None:
        self.config_path.write_text(json.dumps(self.config, indent=2))

    # -- HTTP API -------------------------------------------------------------------------

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """``/api/v1/query``: the result list (each ``{"metric": {...}, "value": [t, "v"]}``)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return list(self._api("/api/v1/query", params)["result"])

    def query_value(self, promql: str) -> float | None:
        """The single value of an instant query, or None when it returns no series."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"{promql!r} returned {len(result)} series, expected one")
        return float(result[0]["value"][1])

    def query_range(self, promql: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        """``/api/v1/query_range``: the result list (each ``{"metric": {...}, "values": [[t, "v"], ...]}``)."""
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"}
        return list(self._api("/api/v1/query_range", params)["result"])

    def query_exemplars(self, promql: str, start: float | None = None,
                        end: float | None = None) -> list[dict[str, Any]]:
        """``/api/v1/query_exemplars``: per series ``{"seriesLabels": {...}, "exemplars": [{"labels":
        {"trace_id": ...}, "value": "...", "timestamp": ...}]}``. Default window: the last hour."""
        now = time.time()
        params = {"query": promql, "start": f"{start if start is not None else now - 3600:.3f}",
                  "end": f"{end if end is not None else now + 60:.3f}"}
        return list(self._api("/api/v1/query_exemplars", params))

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets (``health``, ``lastError``, ``lastScrape``, ``scrapeUrl``...)."""
        return list(self._api("/api/v1/targets", {"state": "active"})["activeTargets"])

    def wait_for(self, promql: str, predicate: Callable[[list[dict[str, Any]]], bool] = bool,
                 timeout: float = 60.0, interval: float = 0.5) -> list[dict[str, Any]]:
        """Poll an instant query until ``predicate(result)`` holds; return that result.

        Raises ``PrometheusError`` with the last result and the targets' state on timeout.
        """
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while True:
            result = self.query(promql)
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                states = [(t.get("scrapeUrl"), t.get("health"), t.get("lastError")) for t in self.targets()]
                raise PrometheusError(f"{promql!r} did not reach the expected result within {timeout:.0f}s; "
                                      f"last result: {result!r}; targets: {states}")
            time.sleep(interval)

    def _api(self, path: str, params: Mapping[str, str]) -> Any:
        body = self._request(f"{path}?{urllib.parse.urlencode(params)}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} failed: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def _request(self, path: str, *, method: str = "GET", raw: bool = False) -> Any:
        request = urllib.request.Request(f"{self.url}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            if raw:
                raise PrometheusError(f"{method} {path}: HTTP {exc.code}: {payload[:500]!r}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise PrometheusError(f"{method} {path}: {exc}") from exc
        if raw:
            return payload
        try:
            return json.loads(payload)
        except ValueError as exc:
            raise PrometheusError(f"{method} {path}: not JSON: {payload[:500]!r}") from exc
