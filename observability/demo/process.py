"""Child processes we start and stop ourselves: a command, a health URL, a PID.

One mechanism for every real part the demo, the no-Docker stack and the tests run (the model
server, Prometheus, Phoenix): start, poll the health URL until it answers 200, and stop exactly
the process started (SIGTERM, then SIGKILL), also when start-up fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self


class ProcessStartError(RuntimeError):
    """A child process exited or never became healthy; the message holds its last output."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could not listen on ``host:port`` now.

    Binds with ``SO_REUSEADDR``, as the servers we start do (Python's ``http.server``,
    prometheus_client, Prometheus, llama.cpp): a port whose only sockets are connections of a
    finished run in TIME-WAIT is free for them, a port something listens on is not.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class ManagedProcess:
    """A child process that counts as started once ``health_url`` answers 200.

    Output goes to ``log_path`` (a temporary file when not given) so a failure can quote it.
    Use as a context manager, or call ``start()`` / ``stop()``.
    """

    def __init__(self, name: str, command: Sequence[str], health_url: str, *,
                 env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                 log_path: str | Path | None = None, startup_timeout: float = 120.0) -> None:
        self.name = name
        self.command = list(command)
        self.health_url = health_url
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> Self:
        if self.log_path is None:
            import tempfile

            fd, path = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(path)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        try:
            self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd)
        except OSError as exc:
            self._close_log()
            raise ProcessStartError(f"{self.name} could not be started ({self.command[0]}): {exc}") from exc
        try:
            self._wait_healthy()
        except BaseException:  # also Ctrl-C during start-up: never leave the child behind
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise ProcessStartError(f"{self.name} exited with code {code} during start-up:\n{self.tail()}")
            if http_ok(self.health_url):
                return
            time.sleep(0.1)
        raise ProcessStartError(
            f"{self.name} was not healthy at {self.health_url} after {self.startup_timeout:.0f}s:\n{self.tail()}"
        )

    def stop(self) -> None:
        """Stop the process we started (by PID); safe to call twice."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        self._close_log()

    def tail(self, limit: int = 3000) -> str:
        """The last ``limit`` characters the process printed."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-limit:].decode(errors="replace")

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
