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
import subprocess
import sys
import time
from pathlib import Path

import pytest

from observability._local_model import MODEL_NAME, LocalModelServer
from observability._process import ManagedProcess, free_port
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
        [sys.executable, "-c", "import observability, observability._attach as a; "
                               "print(a.process_wide_handler() is None)"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


@pytest.mark.parametrize(("variable", "value", "hint"), [
    ("OBSERVABILITY_LANGCHAIN", "maybe", "use 1/true"),
    ("OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD", "1.5", "probability"),
    ("OBSERVABILITY_TOP_LOGPROBS", "50", "from 0 to 20"),
    ("OBSERVABILITY_PROMETHEUS_PORT", "http", "from 1 to 65535"),
    ("OBSERVABILITY_ENABLE_LOGPROBS", "sure", "true/1 or false/0"),
])
def test_a_bad_value_fails_at_activation_naming_the_variable(variable: str, value: str, hint: str) -> None:
    result = run_python("import observability", {"OBSERVABILITY_LANGCHAIN": "1", variable: value})
    assert result.returncode != 0
    assert "ConfigError" in result.stderr and f"{variable}={value!r}" in result.stderr and hint in result.stderr
