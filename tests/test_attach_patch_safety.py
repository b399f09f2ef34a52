"""The logprobs patch checks what it wraps before patching, and our failure inside a wrapper leaves
the app's call as it was. The real ``ChatOpenAI`` against a loopback provider (tests/provider_support.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import BaseChatOpenAI
from pydantic import SecretStr

from observability.attach import activation as _attach
from observability.attach.config import AttachConfig
from observability.langchain import enable_logprobs as patch
from tests.provider_support import ANSWER, canned_provider


def real_methods(**changes: Any) -> type:
    """A class holding BaseChatOpenAI's own methods, with ``changes`` (None deletes one)."""
    methods = {k: v for k, v in BaseChatOpenAI.__dict__.items() if k in patch._EXPECTED}
    methods.update(changes)
    return type("BaseChatOpenAI", (), {k: v for k, v in methods.items() if v is not None})


def test_the_installed_langchain_openai_fits() -> None:
    assert patch.incompatibility(BaseChatOpenAI) is None


@pytest.mark.parametrize(("changes", "reason"), [
    pytest.param({"_use_responses_api": None}, "BaseChatOpenAI._use_responses_api is missing", id="renamed"),
    pytest.param({"_get_request_payload": lambda self, input_, options: {}},
                 "BaseChatOpenAI._get_request_payload does not take the arguments", id="new-required-argument"),
    pytest.param({"_stream": lambda self, messages, stop=None, run_manager=None, **kw: iter(())},
                 "BaseChatOpenAI._stream is a function, not a generator", id="stream-not-a-generator"),
    pytest.param({"_agenerate": BaseChatOpenAI.__dict__["_generate"]},
                 "BaseChatOpenAI._agenerate is a function, not a coroutine", id="agenerate-sync"),
])
def test_a_changed_method_is_named(changes: dict[str, Any], reason: str) -> None:
    problem = patch.incompatibility(real_methods(**changes))
    assert problem is not None and problem.startswith(reason)


@pytest.fixture
def provider() -> Iterator[dict[str, Any]]:
    with canned_provider() as state:
        yield state


def model(provider: dict[str, Any], name: str = "m") -> ChatOpenAI:
    return ChatOpenAI(model=name, base_url=provider["base_url"], api_key=SecretStr("unused"), max_retries=0, timeout=60)


def test_a_changed_langchain_openai_leaves_the_patch_off_with_one_warning(
        provider: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # As a langchain-openai release that made _stream return an iterator instead of being a generator:
    # the app still works; our wrapper (written for a generator) must not be put in.
    original = BaseChatOpenAI.__dict__["_stream"]
    monkeypatch.setattr(BaseChatOpenAI, "_stream", lambda self, *a, **kw: original(self, *a, **kw))
    monkeypatch.setattr(_attach, "_reported", set())
    with pytest.raises(patch.Incompatible, match="_stream is a function, not a generator"):
        patch.enable_logprobs()
    assert not patch.is_patched()
    caplog.set_level(logging.WARNING, logger="observability")
    handler = _attach.attach_process_wide(AttachConfig(enable_logprobs=True), exporters=())
    try:
        with patch.logprobs_enabled():
            assert not patch.is_patched()
            assert "".join(c.text for c in model(provider).stream("q")) == ANSWER
        with patch.logprobs_enabled():
            assert model(provider).invoke("q").text == ANSWER
    finally:
        _attach.detach_process_wide()
    assert handler is not None
    assert all("logprobs" not in body for body in provider["bodies"])
    warnings = [r.getMessage() for r in caplog.records if "_stream is a function" in r.getMessage()]
    assert len(warnings) == 2  # one for the process-wide option, one for the blocks (not one per block)
    assert warnings[0].startswith("observability: OBSERVABILITY_ENABLE_LOGPROBS is on but BaseChatOpenAI._stream")
    assert all(r.levelno == logging.WARNING for r in caplog.records if "_stream is a function" in r.getMessage())


class Exploding:
    def search(self, text: str) -> None:
        raise RuntimeError("our own bug")


def test_our_failure_inside_a_wrapper_sends_the_request_as_the_app_built_it(
        provider: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(patch, "KNOWN_TO_REJECT", (Exploding(),))
    monkeypatch.setattr(patch, "_failed_places", set())
    caplog.set_level(logging.DEBUG, logger="observability")
    with patch.logprobs_enabled(top_logprobs=2):
        answers = [model(provider).invoke("q").text, "".join(c.text for c in model(provider).stream("q"))]
    assert answers == [ANSWER, ANSWER]
    assert all("logprobs" not in body for body in provider["bodies"]) and len(provider["bodies"]) == 2
    logged = sorted(r.getMessage() for r in caplog.records)
    assert logged == [f"observability: the logprobs patch failed in {where} (RuntimeError); the app's call goes on "
                      "as if unpatched. Further failures here are not logged."
                      for where in ("_get_invocation_params", "_get_request_payload")]
    assert not patch.is_patched()
