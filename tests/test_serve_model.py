"""`python -m observability serve-model`: the bundled model served in the foreground, stopped by a
signal within seconds however it was started (from a shell that exits at once, or mid-load)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from observability.demo.process import free_port

pytestmark = pytest.mark.real_model
STOPPED_WITHIN_S = 10  # the server's own grace is 5 s; loaded machines need some slack


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.1)
    pytest.fail(f"{what} within {timeout:.0f} s", pytrace=False)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped by init) counts as stopped.
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_started_from_a_shell_that_exits_at_once_it_serves_and_stops_on_a_signal(tmp_path: Path,
                                                                                 signum: int) -> None:
    port = free_port()
    pid_file = tmp_path / "pid"
    # As a detached shell would: the starter exits at once and the server is re-parented.
    subprocess.run(["sh", "-c", f"{sys.executable} -m observability serve-model --port {port} "
                    f">{tmp_path / 'out'} 2>&1 & echo $! > {pid_file}"], check=True, timeout=30)
    pid = int(pid_file.read_text())
    try:
        wait_for(lambda: healthy(port), 180, "the server did not answer /health")
        # llama.cpp answers /health a moment before the line is printed (seen under load)
        wait_for(lambda: "serving model 'smollm2-135m'" in (tmp_path / "out").read_text(), 30,
                 "no 'serving model' line")
        os.kill(pid, signum)
        took = wait_for(lambda: not alive(pid), STOPPED_WITHIN_S, "the server did not stop")
        print(f"{signal.Signals(signum).name}: stopped in {took:.2f} s")
        assert not healthy(port)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_signal_while_the_model_loads_stops_it_at_once(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "observability", "serve-model", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith("loading SmolLM2")  # progress from the first line
        server.send_signal(signal.SIGINT)
        server.wait(timeout=STOPPED_WITHIN_S)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_busy_port_is_a_usage_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "observability", "serve-model", "--port", str(port)],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "already in use" in result.stderr
