"""What a chat UI streams from a gate: the primary's run is held back from streaming consumers
until the gate has decided.

Streaming consumers are LangChain's streaming handlers: ``astream_events`` (v1, v2), ``astream_log``,
LangGraph's ``stream_mode="messages"`` (v1 and the v3 protocol events). The gate takes them off the
primary's callbacks and puts one ``HeldEvents`` recorder in their place, which records every event
of the primary's runs (start, each token, end). When the gate keeps the answer, the recorded events
are replayed to those handlers in order, so the consumer sees the primary's run and its tokens just
after the decision; when it falls back, they are dropped and the consumer never sees the rejected
answer. Every other handler (tracers, the app's own, ours) sees the primary live, its runs tagged
``PRIMARY_TAG``.

The recorder declares itself a streaming handler exactly when a held one was, so the model streams
(or not) as it would have without the gate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager
from langchain_core.callbacks.manager import ahandle_event, handle_event

try:  # private to langchain-core: where it moves, nothing is held back and the import still works
    from langchain_core.tracers._streaming import _StreamingCallbackHandler, _V2StreamingCallbackHandler
except ImportError:
    class _StreamingCallbackHandler:  # type: ignore[no-redef]
        """Stand-in: no handler is one, so the gate holds nothing back."""

    class _V2StreamingCallbackHandler:  # type: ignore[no-redef]
        """Stand-in, as above."""

    logging.getLogger("observability").warning(
        "observability: this langchain-core has no streaming handler classes where we look; a confidence "
        "gate cannot hold a rejected answer back from streaming consumers")

T = TypeVar("T")

PRIMARY_TAG = "confidence_gate:primary"
"""Tag on every run inside a gate's primary: a handler of the app's own that shows tokens as they
come (not one of LangChain's streaming handlers) skips runs with this tag and shows the gate's output."""

_EVENTS: dict[str, str | None] = {  # callback → the handler attribute that turns it off (as LangChain's managers)
    "on_llm_start": "ignore_llm", "on_chat_model_start": "ignore_chat_model", "on_llm_new_token": "ignore_llm",
    "on_stream_event": "ignore_llm", "on_llm_end": "ignore_llm", "on_llm_error": "ignore_llm",
    "on_chain_start": "ignore_chain", "on_chain_end": "ignore_chain", "on_chain_error": "ignore_chain",
    "on_agent_action": "ignore_agent", "on_agent_finish": "ignore_agent", "on_tool_start": "ignore_agent",
    "on_tool_end": "ignore_agent", "on_tool_error": "ignore_agent", "on_retriever_start": "ignore_retriever",
    "on_retriever_end": "ignore_retriever", "on_retriever_error": "ignore_retriever", "on_text": None,
    "on_retry": "ignore_retry", "on_custom_event": "ignore_custom_event",
}


def is_streaming_consumer(handler: BaseCallbackHandler) -> bool:
    return isinstance(handler, (_StreamingCallbackHandler, _V2StreamingCallbackHandler))


class HeldEvents(BaseCallbackHandler):
    """Records the events of the primary's runs for the streaming handlers it stands in for."""

    run_inline = True

    def __init__(self, held: list[BaseCallbackHandler]) -> None:
        self.held = held
        self._events: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._lock = threading.Lock()

    def tap_output_iter(self, run_id: UUID, output: Iterator[T]) -> Iterator[T]:
        return output

    def tap_output_aiter(self, run_id: UUID, output: AsyncIterator[T]) -> AsyncIterator[T]:
        return output

    def _record(self, event: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        with self._lock:
            self._events.append((event, args, kwargs))

    def _take(self) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
        with self._lock:
            events, self._events = self._events, []
        return events

    def release(self) -> None:
        """Replay what was recorded to the held handlers (the answer was kept)."""
        for event, args, kwargs in self._take():
            handle_event(self.held, event, _EVENTS[event], *args, **kwargs)

    async def arelease(self) -> None:
        for event, args, kwargs in self._take():
            await ahandle_event(self.held, event, _EVENTS[event], *args, **kwargs)

    def drop(self) -> None:
        """Forget what was recorded (the answer was rejected)."""
        self._take()


def _recorder(event: str) -> Any:
    def record(self: HeldEvents, *args: Any, **kwargs: Any) -> None:
        self._record(event, args, kwargs)
    record.__name__ = event
    return record


for _event in _EVENTS:
    setattr(HeldEvents, _event, _recorder(_event))


class _HeldV2Events(HeldEvents, _V2StreamingCallbackHandler):
    """Stands in for a v3-protocol handler, so the model keeps routing through the protocol events."""


def hold_streaming_consumers(callbacks: BaseCallbackManager) -> HeldEvents | None:
    """Take the streaming handlers off ``callbacks`` (a gate's child manager), tag its runs
    ``PRIMARY_TAG`` and put a recorder in their place; None when there was none to hold."""
    callbacks.add_tags([PRIMARY_TAG], inherit=True)
    held: list[BaseCallbackHandler] = []
    for handler in [*callbacks.handlers, *callbacks.inheritable_handlers]:
        if is_streaming_consumer(handler) and not any(handler is h for h in held):
            held.append(handler)
    if not held:
        return None
    for handler in held:
        callbacks.remove_handler(handler)
    recorder = (_HeldV2Events if any(isinstance(h, _V2StreamingCallbackHandler) for h in held) else HeldEvents)(held)
    callbacks.add_handler(recorder, inherit=True)
    return recorder
