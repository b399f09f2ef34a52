"""Issue 8.6: gunicorn-style multiprocess Prometheus. Two worker processes record into one
``PROMETHEUS_MULTIPROC_DIR``; one scrape over HTTP (``MultiProcessCollector``) shows both workers'
counts, exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

# What each worker does: ``ok`` good answers and ``errors`` failed calls through the standard
# exporters on prometheus_client's global registry, then prints its handler's errors and tally.
WORKER = """
import json, sys
from observability import ConfidenceCallbackHandler
from observability.testing import FakeLogprobChatModel
ok, errors, model_name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
handler = ConfidenceCallbackHandler()  # the defaults: global tracer/meter providers, global registry
good = FakeLogprobChatModel(model_name=model_name)
bad = FakeLogprobChatModel(model_name=model_name, error_after=0)
failed = 0
for _ in range(ok):
    good.invoke("hi", config={"callbacks": [handler]})
for _ in range(errors):
    try:
        bad.invoke("hi", config={"callbacks": [handler]})
    except Exception:
        failed += 1
print(json.dumps({"errors": dict(handler.errors), "failed": failed, "open_runs": handler.open_runs}))
"""

WORKERS = {"worker-a": (37, 5), "worker-b": (61, 3)}


def test_two_worker_processes_are_both_in_one_scrape_exactly(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prometheus-multiproc"
    metrics_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    # Both workers share the model name, so their counts must add up in the same series.
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(ok), str(errors), "shared-model"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for ok, errors in WORKERS.values()]
    reports = []
    for worker in workers:
        try:
            out, err = worker.communicate(timeout=300)
        finally:
            if worker.poll() is None:
                worker.kill()
        assert worker.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    for report, (_, errors) in zip(reports, WORKERS.values(), strict=True):
        assert report == {"errors": {}, "failed": errors, "open_runs": 0}
    assert len(list(metrics_dir.glob("*.db"))) >= 2  # each worker wrote its own files

    # The scrape: what a gunicorn app's /metrics serves in multiprocess mode, over real HTTP.
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=30) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}

    def value(name: str, **labels: str) -> float:
        wanted = {"provider": "fake", "model": "shared-model", **labels}
        return sum(v for (n, items), v in samples.items() if n == name and dict(items) == wanted)

    total_ok = sum(ok for ok, _ in WORKERS.values())
    total_errors = sum(errors for _, errors in WORKERS.values())
    assert value("llm_responses_total", status="ok", logprobs="present") == total_ok
    assert value("llm_responses_total", status="error", logprobs="not_returned") == total_errors
    # Histograms: confidence is observed for complete answers only, one observation per answer.
    assert value("llm_response_sequence_probability_count") == total_ok
    assert value("llm_response_tokens_count") == total_ok
    assert value("llm_response_tokens_sum") == total_ok * 7  # the fake answer has 7 tokens
