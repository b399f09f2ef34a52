"""The environment configuration and the run-claim table behind "attached twice, observed once"."""

from __future__ import annotations

import gc
import uuid

import pytest

from observability import ConfigError
from observability.attach.config import AttachConfig
from observability.langchain.dedupe import RunClaims


def test_defaults_when_nothing_is_set() -> None:
    config = AttachConfig.from_env({})
    assert config == AttachConfig()
    assert (config.activation, config.low_confidence_threshold, config.metadata_labels, config.enable_logprobs,
            config.top_logprobs, config.prometheus_port, config.prometheus_host, config.trace_run_tree) == \
        ("auto", 0.5, (), False, 5, None, "127.0.0.1", False)


def test_every_variable_is_read() -> None:
    config = AttachConfig.from_env({
        "OBSERVABILITY_LANGCHAIN": "TRUE", "OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD": "0.25",
        "OBSERVABILITY_METADATA_LABELS": " route, tenant ,,", "OBSERVABILITY_ENABLE_LOGPROBS": "yes",
        "OBSERVABILITY_TOP_LOGPROBS": "0", "OBSERVABILITY_PROMETHEUS_PORT": "9464",
        "OBSERVABILITY_PROMETHEUS_HOST": "0.0.0.0", "OBSERVABILITY_TRACE_RUN_TREE": "1"})
    assert config == AttachConfig(activation="on", low_confidence_threshold=0.25, metadata_labels=("route", "tenant"),
                                  enable_logprobs=True, top_logprobs=0, prometheus_port=9464,
                                  prometheus_host="0.0.0.0", trace_run_tree=True)
    assert AttachConfig.from_env({"OBSERVABILITY_LANGCHAIN": "off"}).activation == "off"


@pytest.mark.parametrize(("variable", "value"), [
    ("OBSERVABILITY_LANGCHAIN", "2"),
    ("OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD", "0"),
    ("OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD", "nan"),
    ("OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD", "half"),
    ("OBSERVABILITY_TOP_LOGPROBS", "-1"),
    ("OBSERVABILITY_TOP_LOGPROBS", "2.5"),
    ("OBSERVABILITY_PROMETHEUS_PORT", "0"),
    ("OBSERVABILITY_PROMETHEUS_PORT", "70000"),
    ("OBSERVABILITY_TRACE_RUN_TREE", "maybe"),
])
def test_a_bad_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{variable}="):
        AttachConfig.from_env({variable: value})


class Owner:
    pass


def test_claims_first_owner_wins_until_it_releases() -> None:
    claims = RunClaims()
    run = uuid.uuid4()
    first, second = Owner(), Owner()
    assert claims.claim(run, ["shared", 1], first)
    assert claims.claim(run, ["shared", 1], first)  # the owner again: still its run
    assert not claims.claim(run, [2, "shared"], second)  # one shared key is enough
    assert claims.claim(run, [3], second)  # no shared key: both observe
    claims.release(run, ["shared", 1], first)
    assert claims.claim(run, ["shared"], second)
    claims.release(run, ["shared"], first)  # not first's any more: nothing happens
    assert not claims.claim(run, ["shared"], first)
    claims.release(run, ["shared", 3], second)
    assert len(claims) == 0


def test_claims_of_a_dropped_owner_do_not_count_and_the_table_is_bounded() -> None:
    claims = RunClaims(max_claims=3)
    run = uuid.uuid4()
    gone = Owner()
    assert claims.claim(run, ["k"], gone)
    del gone
    gc.collect()
    assert claims.claim(run, ["k"], Owner())
    keeper = Owner()
    for _ in range(10):
        claims.claim(uuid.uuid4(), ["k"], keeper)
    assert len(claims) == 3


def test_two_handlers_sharing_one_exporter_export_a_run_once_and_both_report() -> None:
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, LLMResult

    from observability import ConfidenceCallbackHandler
    from tests.attach_support import Recorder

    shared, own = Recorder(), Recorder()
    first_reports: list[object] = []
    second_reports: list[object] = []
    first = ConfidenceCallbackHandler(exporters=[shared], on_report=first_reports.append)
    second = ConfidenceCallbackHandler(exporters=[shared, own], on_report=second_reports.append)
    run = uuid.uuid4()
    result = LLMResult(generations=[[ChatGeneration(message=AIMessage("hi"))]])
    for handler in (first, second):
        handler.on_chat_model_start({}, [[]], run_id=run)
    for handler in (first, second):
        handler.on_llm_end(result, run_id=run)
    assert shared.run_ids == [run]  # exported once, by the first handler
    assert own.run_ids == [run]  # the second's own exporter is not shared: it gets the run too
    assert (first.duplicate_runs, second.duplicate_runs) == (0, 1)
    assert len(first_reports) == len(second_reports) == 1
    assert first.open_runs == second.open_runs == 0
