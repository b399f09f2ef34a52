"""Real trace backends for the tests: a Phoenix server (OTLP receiver with a span API) and an MLflow
tracking server (``MlflowServer``, from ``.venv-mlflow``, ``make mlflow``, or ``$MLFLOW_BIN``).

Phoenix lives in its own virtualenv (``make phoenix``); ``$PHOENIX_BIN`` or
``/work/main/.venv-phoenix/bin/phoenix`` (the repository's ``.venv-phoenix``) is run on
127.0.0.1 with free HTTP and gRPC ports and its own working directory, telemetry off.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from observability.demo.process import ManagedProcess, ProcessStartError, free_port

REPO = Path(__file__).resolve().parent.parent


class PhoenixError(RuntimeError):
    """Phoenix could not be started or its API failed."""


def phoenix_binary() -> str:
    configured = os.environ.get("PHOENIX_BIN")
    candidate = configured or str(REPO / ".venv-phoenix" / "bin" / "phoenix")
    if not os.access(candidate, os.X_OK):
        raise PhoenixError(f"Phoenix is not installed at {candidate}: run `make phoenix` "
                           "(or set PHOENIX_BIN to a `phoenix` executable)")
    return candidate


class PhoenixServer(ManagedProcess):
    """``phoenix serve`` on 127.0.0.1; ``traces_endpoint`` takes OTLP/HTTP protobuf."""

    def __init__(self, *, startup_timeout: float = 180.0) -> None:
        self.port = free_port()
        self.grpc_port = free_port()
        while self.grpc_port == self.port:
            self.grpc_port = free_port()
        self.working_dir = Path(tempfile.mkdtemp(prefix="phoenix-"))
        env = {
            **os.environ,
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(self.port),
            "PHOENIX_GRPC_PORT": str(self.grpc_port),
            "PHOENIX_WORKING_DIR": str(self.working_dir),
            "PHOENIX_TELEMETRY_ENABLED": "false",
        }
        super().__init__("phoenix", ["<phoenix>", "serve"], f"{self.url}/healthz", env=env,
                         cwd=self.working_dir, startup_timeout=startup_timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def traces_endpoint(self) -> str:
        return f"{self.url}/v1/traces"

    def start(self) -> PhoenixServer:
        self.command[0] = phoenix_binary()
        try:
            super().start()
        except ProcessStartError as exc:
            raise PhoenixError(str(exc)) from exc
        return self

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.working_dir, ignore_errors=True)

    def spans(self, project: str, limit: int = 1000) -> list[dict[str, Any]]:
        """``GET /v1/projects/{project}/spans``: the project's spans (empty when it does not exist yet)."""
        query = urllib.parse.urlencode({"limit": limit})
        url = f"{self.url}/v1/projects/{urllib.parse.quote(project, safe='')}/spans?{query}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise PhoenixError(f"GET {url}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc
        return list(body.get("data", []))


class MlflowServerError(RuntimeError):
    """The MLflow tracking server could not be started."""


def mlflow_binary() -> str:
    configured = os.environ.get("MLFLOW_BIN")
    candidate = configured or str(REPO / ".venv-mlflow" / "bin" / "mlflow")
    if not os.access(candidate, os.X_OK):
        raise MlflowServerError(f"the MLflow server is not installed at {candidate}: run `make mlflow` "
                                "(or set MLFLOW_BIN to an `mlflow` executable)")
    return candidate


def _descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (Linux ``/proc``), children first."""
    found: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in map(int, children):
        found += [child, *_descendants(child)]
    return found


class MlflowServer(ManagedProcess):
    """``mlflow server`` on 127.0.0.1 (one worker, no job runner, telemetry off), with a SQLite
    backend store and artifacts in its own temporary directory. ``mlflow server`` runs uvicorn as a
    child process: ``stop`` ends the server and the processes it started, by PID."""

    def __init__(self, *, startup_timeout: float = 180.0) -> None:
        self.port = free_port()
        self.working_dir = Path(tempfile.mkdtemp(prefix="mlflow-"))
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        super().__init__("mlflow", [
            "<mlflow>", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.working_dir / 'mlflow.db'}",
            "--artifacts-destination", str(self.working_dir / "artifacts"),
        ], f"{self.url}/health", env=env, cwd=self.working_dir, startup_timeout=startup_timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MlflowServer:
        self.command[0] = mlflow_binary()
        try:
            super().start()
        except ProcessStartError as exc:
            raise MlflowServerError(str(exc)) from exc
        return self

    def stop(self) -> None:
        children = _descendants(self.pid) if self.pid is not None else []
        super().stop()
        for pid in children:  # uvicorn, if the server left it behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        shutil.rmtree(self.working_dir, ignore_errors=True)
