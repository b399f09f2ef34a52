"""Whatever the environment holds, activation returns and the app's call proceeds (issue 15).

Random values for every ``OBSERVABILITY_*`` variable, activation on, off, unset and garbage,
through both entry points (``import observability``'s ``activate_from_env`` and the
instrumentor's), then a real ``ChatOpenAI`` call to a loopback provider. Port and host values are
drawn so that nothing outside 127.0.0.1 is ever bound and no name needs DNS: a valid port is either
one this test holds busy or a free one.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from observability.attach import activation as _attach
from observability.attach.config import VARIABLES
from observability.demo.process import free_port
from observability.langchain import enable_logprobs as patch
from observability.testing import InMemoryTelemetry
from tests.fuzzing import fuzz
from tests.provider_support import ANSWER, canned_provider

SHIPPED = Path(__file__).resolve().parent.parent / "benchmarks" / "evaluation"
CALIBRATIONS = ["", " ", "/", "/nonexistent/calibration.json", str(SHIPPED / "calibration.json"),
                str(SHIPPED / "result.json")]
"""A valid map, a directory, a missing file and a JSON file that is not a map."""
SWITCHES = ["", " ", "1", "0", "true", "FALSE", " yes ", "no", "on", "off", "maybe", "2", "tru", "\x00", "ü"]


def not_a_valid(pattern: str) -> st.SearchStrategy[str]:
    return st.text(max_size=12).filter(lambda t: not re.fullmatch(pattern, t.strip()))


def environments(busy_port: int) -> st.SearchStrategy[dict[str, str]]:
    numbers = st.one_of(st.integers(-5, 70000).map(str), st.floats(allow_nan=True).map(str))
    ports = st.one_of(st.sampled_from(["", "0", "-1", "65536", "http", " 9464x", str(busy_port)]),
                      st.builds(lambda: str(free_port())), not_a_valid(r"[+-]?[0-9_]+"))
    hosts = st.one_of(st.sampled_from(["", " ", "127.0.0.1", " 127.0.0.1 ", "localhost", "::1", "not a host",
                                       "\x00", "127.0.0.1:80", "[::1]"]),
                      not_a_valid(r"[A-Za-z0-9.:\[\]%-]*"))
    values = {
        "OBSERVABILITY_LANGCHAIN": st.one_of(st.sampled_from(SWITCHES), st.text(max_size=8)),
        "OBSERVABILITY_LOW_CONFIDENCE_THRESHOLD": st.one_of(numbers, st.text(max_size=8),
                                                             st.sampled_from(["0.5", "1", "1e-3", "nan", "inf"])),
        "OBSERVABILITY_METADATA_LABELS": st.one_of(st.text(max_size=20),
                                                    st.sampled_from(["route", "route,tenant", "model", "__x", "1a"])),
        "OBSERVABILITY_TRACE_RUN_TREE": st.one_of(st.sampled_from(SWITCHES), st.text(max_size=8)),
        "OBSERVABILITY_ENABLE_LOGPROBS": st.one_of(st.sampled_from(SWITCHES), st.text(max_size=8)),
        "OBSERVABILITY_TOP_LOGPROBS": st.one_of(numbers, st.text(max_size=8)),
        "OBSERVABILITY_PROMETHEUS_PORT": ports,
        "OBSERVABILITY_PROMETHEUS_HOST": hosts,
        "OBSERVABILITY_CALIBRATION": st.one_of(st.text(max_size=12), st.sampled_from(CALIBRATIONS)),
    }
    assert set(values) == set(VARIABLES)  # every variable is fuzzed
    return st.fixed_dictionaries({}, optional=values).map(
        lambda env: {k: v.replace("\x00", "") if k != "OBSERVABILITY_PROMETHEUS_HOST" else v for k, v in env.items()})


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


@pytest.fixture(scope="module")
def provider() -> Iterator[dict[str, Any]]:
    with canned_provider() as state:
        yield state


def test_any_environment_activates_or_not_and_the_call_proceeds(busy_port: int, provider: dict[str, Any]) -> None:
    model = ChatOpenAI(model="m", base_url=provider["base_url"], api_key=SecretStr("unused"), max_retries=0, timeout=60)

    @fuzz(60)
    @given(env=environments(busy_port), instrumentor=st.booleans())
    def check(env: dict[str, str], instrumentor: bool) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVABILITY_")}
        # os.environ cannot hold NUL; the host's NUL case reaches the reader through `environ=`.
        process_env = {k: v for k, v in env.items() if "\x00" not in v}
        sinks = InMemoryTelemetry()
        options: dict[str, Any] = {"tracer_provider": sinks.tracer_provider, "meter_provider": sinks.meter_provider,
                                   "registry": sinks.registry}
        try:
            with mock.patch.dict(os.environ, {**clean, **process_env}, clear=True):
                if instrumentor:
                    _attach.instrument_from_env({}, options)
                else:
                    _attach.activate_from_env(env, **options)
                assert model.invoke("q").text == ANSWER  # the app's call proceeds
        finally:
            _attach.detach_process_wide()
            sinks.shutdown()
        assert not patch.is_patched() and _attach.process_wide_handler() is None

    check()
