"""Zero-code activation from the environment, in a subprocess, checked by exact counter values.

``tests/attach_env_app.py`` makes eight model calls against the real local model: some seen by
the process-wide handler only, some also by an explicit handler or an ``observe_confidence()``
block that share the default exporters, one in a bare thread. Every call must be counted
exactly once in Prometheus, scraped over HTTP from the app's own ``/metrics``. (The metadata
label allowlist is checked in test_attach_instrument.py: an explicit handler with the default
exporters and a different allowlist cannot share the registry's metrics; see the README.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from observability.demo.model_server import MODEL_NAME, LocalModelServer
from observability.demo.process import ManagedProcess, free_port
from tests.attach_support import scrape, total

ROOT = Path(__file__).resolve().parent.parent
CALLS = 8


def wait_for_json_line(app: ManagedProcess, timeout: float = 600) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in app.tail(20_000).splitlines():
            if line.startswith("{"):
                result: dict[str, object] = json.loads(line)
                return result
        if app.process is None or app.process.poll() is not None:
            pytest.fail(f"the app exited early:\n{app.tail()}", pytrace=False)
        time.sleep(0.2)
    pytest.fail(f"the app did not finish its calls in {timeout:.0f}s:\n{app.tail()}", pytrace=False)


@pytest.mark.real_model
def test_env_activation_observes_every_run_exactly_once(local_model: LocalModelServer, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "APP_BASE_URL": local_model.base_url, "APP_MODEL": MODEL_NAME,
           "OBSERVABILITY_LANGCHAIN": "1", "OBSERVABILITY_PROMETHEUS_PORT": str(port),
           "OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD": "0.9",
           "OBSERVABILITY_ENABLE_LOGPROBS": "true", "OBSERVABILITY_TOP_LOGPROBS": "2",
           "PYTHONPATH": str(ROOT)}
    app = ManagedProcess("attach-env-app", [sys.executable, str(ROOT / "tests" / "attach_env_app.py")],
                         f"http://127.0.0.1:{port}/metrics", env=env, cwd=ROOT,
                         log_path=tmp_path / "app.log", startup_timeout=120)
    with app:
        counters = wait_for_json_line(app)
        samples = scrape(f"http://127.0.0.1:{port}/metrics")

    duplicates = sum(counters.pop(k) for k in ("process_wide_duplicates", "explicit_duplicates",  # type: ignore[misc]
                                               "block_duplicates"))
    assert duplicates == 2  # the explicit call and the block's call were seen by two handlers each
    assert counters == {"threshold": 0.9, "open_runs": 0, "errors": 0}
    assert total(samples, "llm_responses_total") == CALLS
    assert total(samples, "llm_responses_total", status="ok", logprobs="present") == CALLS
    assert total(samples, "llm_response_sequence_probability_count") == CALLS


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_without_the_variable_import_attaches_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVABILITY_")}
    result = subprocess.run(
        [sys.executable, "-c", "import observability, observability.attach.activation as a; "
                               "print(a.process_wide_handler() is None)"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


IMPORT_AND_CALL = """
import sys
{before}
import observability
from observability.attach import activation as _attach
from observability.testing import FakeLogprobChatModel
handler = _attach.process_wide_handler()
answer = FakeLogprobChatModel(tokens=["o", "k"], token_logprobs=[-0.1, -0.2]).invoke("hi").content
print("attached" if handler else "not attached", answer, handler.low_confidence_threshold if handler else "")
"""


def import_and_call(env: dict[str, str], before: str = "") -> subprocess.CompletedProcess[str]:
    """``import observability`` then a model call, in a fresh interpreter whose environment holds only
    ``env`` of our variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVABILITY_")}
    return subprocess.run([sys.executable, "-c", IMPORT_AND_CALL.format(before=before)], env={**clean, **env},
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("observability:")]


@pytest.mark.parametrize(("variable", "value", "hint"), [
    ("OBSERVABILITY_LANGCHAIN", "maybe", "use 1/true/yes/on or 0/false/no/off"),
    ("OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD", "1.5", "use a probability above 0 and at most 1"),
    ("OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD", "abc", "use a probability above 0 and at most 1"),
    ("OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD", "maybe", "use a probability above 0 and at most 1"),
])
def test_a_bad_value_that_stops_the_handler_is_one_error_line_and_the_app_runs(
        variable: str, value: str, hint: str) -> None:
    # Issue 15: these raised ConfigError out of `import observability`.
    result = import_and_call({"OBSERVABILITY_LANGCHAIN": "1", variable: value})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["not", "attached", "ok"]
    [line] = error_lines(result)  # once
    assert line.startswith(f"observability: {variable}={value!r} is not usable: {hint}")
    assert line.endswith("the handler is not attached; the app runs unobserved. Check the whole configuration with "
                         "`python -m observability doctor`.")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("variable", "value", "hint", "without"), [
    ("OBSERVABILITY_TOP_LOGPROBS", "50", "from 0 to 20", "logprobs not turned on"),
    ("OBSERVABILITY_PROMETHEUS_PORT", "http", "from 1 to 65535", "without the /metrics server"),
    ("OBSERVABILITY_PROMETHEUS_HOST", "not a host", "use an IP address", "without the /metrics server"),
    ("OBSERVABILITY_ENABLE_LOGPROBS", "sure", "use 1/true/yes/on or 0/false/no/off", "logprobs not turned on"),
    ("OBSERVABILITY_TRACE_RUN_TREE", "maybe", "use 1/true/yes/on", "model spans only"),
    ("OBSERVABILITY_METADATA_LABELS", "route,status", "'status' cannot be a label", "without metadata labels"),
])
def test_a_bad_value_of_a_part_attaches_without_that_part(variable: str, value: str, hint: str, without: str) -> None:
    result = import_and_call({"OBSERVABILITY_LANGCHAIN": "1", "OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD": "0.25",
                              variable: value})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["attached", "ok", "0.25"]
    [line] = error_lines(result)
    assert line.startswith(f"observability: {variable}={value!r} is not usable: ") and hint in line and without in line


def test_nothing_is_read_unless_activation_is_asked_for() -> None:
    # Issue 15: OBSERVABILITY_TOP_LOGPROBS=50 with activation unset raised ConfigError at import.
    result = import_and_call({"OBSERVABILITY_TOP_LOGPROBS": "50", "OBSERVABILITY_PROMETHEUS_PORT": "x"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["not", "attached", "ok"]
    assert result.stderr == ""


def test_a_busy_metrics_port_is_one_error_line_and_the_handler_still_attaches() -> None:
    # Issue 15: activation with the port in use raised OSError out of the import.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = import_and_call({"OBSERVABILITY_LANGCHAIN": "1", "OBSERVABILITY_PROMETHEUS_PORT": str(port)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["attached", "ok", "0.5"]
    assert error_lines(result) == [
        f"observability: cannot serve /metrics on 127.0.0.1:{port} (OSError): choose a free port in "
        "OBSERVABILITY_PROMETHEUS_PORT (or stop what uses it) and an address of this host in "
        "OBSERVABILITY_PROMETHEUS_HOST; attached without the /metrics server"]


def test_enable_logprobs_without_langchain_openai_is_one_error_line() -> None:
    # Issue 15: ModuleNotFoundError out of the import. `sys.modules[name] = None` makes the import
    # fail exactly as an absent package does.
    result = import_and_call({"OBSERVABILITY_LANGCHAIN": "1", "OBSERVABILITY_ENABLE_LOGPROBS": "yes"},
                             before="sys.modules['langchain_openai'] = None")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["attached", "ok", "0.5"]
    assert error_lines(result) == [
        "observability: OBSERVABILITY_ENABLE_LOGPROBS is on but langchain-openai cannot be imported "
        "(ModuleNotFoundError); install it (pip install 'langchain-confidence[openai]') or stop asking for the "
        "logprobs patch; "
        "attached; requests are sent as the app builds them (logprobs not turned on)"]


def test_a_configured_logging_handler_gets_the_line_once_and_stderr_stays_clean() -> None:
    before = ("import logging, io; stream = io.StringIO(); logging.basicConfig(stream=stream, "
              "format='%(levelname)s %(name)s %(message)s')")
    code = IMPORT_AND_CALL.format(before=before) + (
        "from observability.instrumentation import ConfidenceInstrumentor\n"
        "ConfidenceInstrumentor().instrument()\n"  # reads the environment again: not logged twice
        "print(stream.getvalue(), end='')\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVABILITY_")}
    result = subprocess.run([sys.executable, "-c", code], env={**clean, "OBSERVABILITY_LANGCHAIN": "1",
                                                               "OBSERVABILITY_TOP_LOGPROBS": "-3"},
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    logged = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert logged == ["ERROR observability observability: OBSERVABILITY_TOP_LOGPROBS='-3' is not usable: use a whole "
                      "number from 0 to 20; attached; requests are sent as the app builds them (logprobs not turned "
                      "on). Check the whole configuration with `python -m observability doctor`."]
