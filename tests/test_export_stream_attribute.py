"""``gen_ai.request.stream`` comes from the run's start when the start says the request streams, so a
stream that fails before its first chunk is marked too; a plain call is not marked."""

from __future__ import annotations

from typing import Any

import pytest

from observability import ConfidenceCallbackHandler
from observability.testing import FakeLogprobChatModel, FakeModelError, InMemoryTelemetry


def model_span(telemetry: InMemoryTelemetry) -> dict[str, Any]:
    [span] = [s for s in telemetry.spans() if s.name.startswith("chat ")]
    return dict(span.attributes or {})


def test_a_stream_that_fails_before_its_first_chunk_is_marked_streamed(telemetry: InMemoryTelemetry) -> None:
    handler = ConfidenceCallbackHandler(exporters=telemetry.exporters())
    broken = FakeLogprobChatModel(error_after=0)
    with pytest.raises(FakeModelError):
        broken.invoke("hi", config={"callbacks": [handler]}, stream=True)  # stream=True: known at the start
    attributes = model_span(telemetry)
    assert attributes["gen_ai.request.stream"] is True
    assert "gen_ai.response.time_to_first_chunk" not in attributes  # no chunk came


@pytest.mark.parametrize(("call", "streamed"), [
    pytest.param(lambda m, c: m.invoke("hi", config=c), False, id="invoke"),
    pytest.param(lambda m, c: m.invoke("hi", config=c, stream=True), True, id="invoke-stream-true"),
    pytest.param(lambda m, c: list(m.stream("hi", config=c)), True, id="stream"),
])
def test_streamed_exactly_when_the_request_streamed(telemetry: InMemoryTelemetry, call: Any, streamed: bool) -> None:
    handler = ConfidenceCallbackHandler(exporters=telemetry.exporters())
    call(FakeLogprobChatModel(), {"callbacks": [handler]})
    assert model_span(telemetry).get("gen_ai.request.stream") is (True if streamed else None)


@pytest.mark.real_model
def test_the_real_client_streaming_into_a_refused_connection_is_marked_streamed(
        chat_model: Any, telemetry: InMemoryTelemetry) -> None:
    import openai

    from observability.demo.process import free_port

    handler = ConfidenceCallbackHandler(exporters=telemetry.exporters())
    dead = chat_model(streaming=True, logprobs=True, base_url=f"http://127.0.0.1:{free_port()}/v1", timeout=5)
    with pytest.raises(openai.APIConnectionError):
        dead.invoke("hi", config={"callbacks": [handler]})
    assert model_span(telemetry)["gen_ai.request.stream"] is True
