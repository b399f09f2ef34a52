"""MLflow's peer when things go wrong, in the fast tier: the real ``mlflow-tracing`` client and its
LangChain autologging, a loopback stand-in (or a closed port) as the tracking server, the real
``ChatOpenAI`` against a canned loopback provider. tests/test_tracer_mlflow.py has the real server.

- The assessment queue never blocks the caller: when full it drops (counted, logged once), and its
  flush gives up after its timeout however long MLflow takes.
- A queue used before ``fork`` sends from the child too.
- An MLflow tracer whose private run map changed shape: one warning naming MLflow and the exception
  type, counted in the exporter's ``failures``, and the app's call returns its answer unchanged.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from observability import observe_confidence
from observability.exporters import _peer_spans
from observability.langchain import mlflow_runs
from observability.langchain import peers as _peers
from observability.langchain.tracer_runs import TracerRunsExporter
from observability.testing import InMemoryTelemetry
from tests.provider_support import ANSWER, canned_provider
from tests.tracer_support import langsmith_endpoint

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # no usage reports: loopback only
os.environ["DO_NOT_TRACK"] = "true"


@pytest.fixture
def tracking_uri(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``set(uri)`` points MLflow's client there, with no HTTP retries (every MLflow test sets its own
    tracking URI; MLflow's default would be a file in the working directory)."""
    import mlflow

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    yield mlflow.set_tracking_uri
    mlflow.flush_trace_async_logging()  # while retries are still off


def test_a_full_queue_drops_and_counts_and_its_flush_is_bounded(
        tracking_uri: Any, caplog: pytest.LogCaptureFixture) -> None:
    """MLflow holds every request: the first run's assessments keep the thread busy, two more
    wait, the rest are dropped at once; ``flush`` returns when its time is up."""
    queue = mlflow_runs.FeedbackQueue(maxsize=2)
    with langsmith_endpoint(slow=True) as holding, caplog.at_level(logging.WARNING, "observability"):
        tracking_uri(holding.url)
        _peer_spans._logged.discard(f"{_peers.MLFLOW} queue")
        for index in range(6):
            queue.put("tr-0123456789abcdef0123456789abcdef", f"{index:016x}", {"sequence_probability": 0.5})
        assert queue.dropped >= 3 and queue.sent == 0
        assert queue.flush(0.2) is False
        assert [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()] == [
            "observability: more than 2 runs' MLflow assessments were waiting; further runs' assessments are "
            "dropped and counted while it is full"]
        holding.release.set()
        assert queue.flush(60)


class _RenamedMap:
    """MLflow's run map in a shape we do not know (not a ``Mapping``), still working for MLflow."""

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        self._items[key] = value

    def __getattr__(self, name: str) -> Any:  # get, pop, values...: MLflow's own calls work
        return getattr(self._items, name)


def test_an_mlflow_tracer_whose_run_map_changed_leaves_the_call_alone(
        tracking_uri: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from langchain_openai import ChatOpenAI
    from mlflow.langchain.langchain_tracer import MlflowLangchainTracer

    original = MlflowLangchainTracer.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._run_span_mapping = _RenamedMap()

    monkeypatch.setattr(MlflowLangchainTracer, "__init__", init)
    tracking_uri("http://127.0.0.1:9")  # MLflow's own export fails in its thread; not our business
    _peer_spans._logged.discard(f"{_peers.MLFLOW} run")
    telemetry = InMemoryTelemetry()
    exporters = telemetry.exporters()
    (runs,) = [e for e in exporters if isinstance(e, TracerRunsExporter)]
    mlflow.langchain.autolog(silent=True)
    try:
        with canned_provider() as provider, caplog.at_level(logging.WARNING, "observability"):
            llm = ChatOpenAI(model="canned", base_url=provider["base_url"], api_key=SecretStr("unused"), max_retries=0)
            with observe_confidence(exporters=exporters):
                answers = [llm.invoke("Hello?").text for _ in range(2)]
    finally:
        mlflow.langchain.autolog(disable=True)
        telemetry.shutdown()
        _peers.uninstall()
    assert answers == [ANSWER, ANSWER]
    assert runs.failures == {_peers.MLFLOW: 2}
    assert [r.getMessage() for r in caplog.records if r.name == "observability"] == [
        "observability: mlflow's LangChain handler does not look like the version we know (TypeError finding "
        "its run); its runs go on without our figures"]


def test_a_forked_child_starts_its_own_sending_thread(tracking_uri: Any) -> None:
    """A queue used before ``fork`` (a pre-loading server's parent) still sends from the child,
    where the parent's thread does not exist: the child's first ``put`` starts one."""
    queue = mlflow_runs.FeedbackQueue()
    with langsmith_endpoint(slow=True) as holding:
        tracking_uri(holding.url)
        queue.put("tr-0123456789abcdef0123456789abcdef", "0000000000000001", {"sequence_probability": 0.5})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # forking a process that has threads
            child = os.fork()
        if child == 0:  # the child: report whether a thread is sending, and leave at once
            queue.put("tr-0123456789abcdef0123456789abcdef", "0000000000000002", {"sequence_probability": 0.5})
            thread = queue._thread
            os._exit(0 if thread is not None and thread.is_alive() else 1)
        _, status = os.waitpid(child, 0)
        holding.release.set()
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child had no thread sending its assessments"
