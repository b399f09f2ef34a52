"""Opt-in: make OpenAI-compatible chat models ask for logprobs when the app did not.

Off by default, because it changes the request the app sends. Turned on process-wide by
``enable_logprobs()`` (``OBSERVABILITY_ENABLE_LOGPROBS=true`` under zero-code activation) or for
one block by ``logprobs_enabled()`` (``observe_confidence(enable_logprobs=True)``).

What is patched, exactly: six methods of
``langchain_openai.chat_models.base.BaseChatOpenAI`` — the base of ``ChatOpenAI``,
``AzureChatOpenAI`` and the OpenAI-compatible chat models built on it — each replaced on the
class by a wrapper that calls the original:

- ``_get_request_payload``: when the payload is a Chat Completions request (it has
  ``messages``; the Responses API is left alone), has neither ``logprobs`` nor ``top_logprobs``,
  and the model is not known to reject them (``KNOWN_TO_REJECT``) nor refused them earlier in
  this process, adds ``logprobs=True`` and ``top_logprobs=N``.
- ``_get_invocation_params``: the same decision, so callbacks (and our ``logprobs`` label) see
  what was asked.
- ``_generate``, ``_agenerate``, ``_stream``, ``_astream``: when a request we changed is
  answered with HTTP 400 naming logprobs, the same call is made once more without our addition,
  the model is remembered as refusing (never changed again in this process), and the refusal
  is counted in ``stats()["refusals"]`` and logged once. The user's call does not fail because of us;
  any other error is the app's and is re-raised untouched.

Undone by ``disable_logprobs()`` / leaving the ``logprobs_enabled()`` block: when the last user
lets go, the saved original functions are put back on the class with ``setattr`` and nothing
of ours remains on it. The legacy completions ``OpenAI`` LLM is not patched.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from observability._config import DEFAULT_TOP_LOGPROBS, MAX_TOP_LOGPROBS

logger = logging.getLogger("observability")

KNOWN_TO_REJECT: tuple[re.Pattern[str], ...] = (
    re.compile(r"^o\d"),                 # OpenAI o-series reasoning models refuse logprobs
    re.compile(r"^gpt-5"),               # the GPT-5 reasoning family, likewise
    re.compile(r"search"),               # gpt-4o(-mini)-search-preview
    re.compile(r"audio|realtime"),       # audio and realtime models
    re.compile(r"^deepseek-reasoner"),   # DeepSeek's reasoning model: 400 on logprobs
)
"""Model names (matched lower-case) whose requests are never changed."""

_PATCHED = ("_get_request_payload", "_get_invocation_params", "_generate", "_agenerate", "_stream", "_astream")


class _Call:
    """One model call in flight: whether we changed its request."""

    __slots__ = ("changed",)

    def __init__(self) -> None:
        self.changed = False


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0                        # enablers holding the patch: process-wide + open blocks
        self.process_top_logprobs: int | None = None
        self.originals: dict[str, Any] = {}
        self.refused: set[tuple[str, str]] = set()   # (base URL, model) that answered 400
        self.refusals = 0
        self.added = 0


_state = _State()
_block_top_logprobs: ContextVar[int | None] = ContextVar("observability_block_top_logprobs", default=None)
_current_call: ContextVar[_Call | None] = ContextVar("observability_logprobs_call", default=None)
_suppressed: ContextVar[bool] = ContextVar("observability_logprobs_suppressed", default=False)


def stats() -> dict[str, int]:
    """``added``: requests we added logprobs to; ``refusals``: calls retried without them."""
    return {"added": _state.added, "refusals": _state.refusals}


def is_patched() -> bool:
    return bool(_state.originals)


def enable_logprobs(top_logprobs: int = DEFAULT_TOP_LOGPROBS) -> None:
    """Turn logprobs on for every OpenAI-compatible chat model in the process (idempotent)."""
    top = _check_top(top_logprobs)
    with _state.lock:
        if _state.process_top_logprobs is None:
            _acquire()
        _state.process_top_logprobs = top


def disable_logprobs() -> None:
    """Undo ``enable_logprobs()``; the class is restored once no ``logprobs_enabled()`` block is open."""
    with _state.lock:
        if _state.process_top_logprobs is not None:
            _state.process_top_logprobs = None
            _release()


@contextmanager
def logprobs_enabled(top_logprobs: int = DEFAULT_TOP_LOGPROBS) -> Iterator[None]:
    """Turn logprobs on for model calls made in this context (this task, its children)."""
    top = _check_top(top_logprobs)
    with _state.lock:
        _acquire()
    token = _block_top_logprobs.set(top)
    try:
        yield
    finally:
        _block_top_logprobs.reset(token)
        with _state.lock:
            _release()


def _check_top(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOP_LOGPROBS:
        raise ValueError(f"top_logprobs must be a whole number from 0 to {MAX_TOP_LOGPROBS}, got {value!r}")
    return value


def _acquire() -> None:
    if _state.users == 0:
        from langchain_openai.chat_models.base import BaseChatOpenAI

        wrappers: dict[str, Callable[[Any], Any]] = {
            "_get_request_payload": _wrap_payload, "_get_invocation_params": _wrap_params,
            "_generate": _wrap_call, "_agenerate": _wrap_acall, "_stream": _wrap_stream, "_astream": _wrap_astream,
        }
        for name in _PATCHED:
            original = BaseChatOpenAI.__dict__[name]
            _state.originals[name] = original
            setattr(BaseChatOpenAI, name, wrappers[name](original))
    _state.users += 1


def _release() -> None:
    _state.users -= 1
    if _state.users == 0:
        from langchain_openai.chat_models.base import BaseChatOpenAI

        for name, original in _state.originals.items():
            setattr(BaseChatOpenAI, name, original)
        _state.originals.clear()


# ---- the decision -----------------------------------------------------------------------------
def _top_to_add(model: Any, params: Mapping[str, Any]) -> int | None:
    """How many alternatives to ask for on this request, or None to leave it as the app wrote it."""
    if _suppressed.get():
        return None
    top = _block_top_logprobs.get()
    if top is None:
        top = _state.process_top_logprobs
    if top is None or params.get("logprobs") is not None or params.get("top_logprobs") is not None:
        return None
    name = str(params.get("model") or getattr(model, "model_name", "") or "").lower()
    if any(pattern.search(name) for pattern in KNOWN_TO_REJECT) or _identity(model) in _state.refused:
        return None
    return top


def _identity(model: Any) -> tuple[str, str]:
    return str(getattr(model, "openai_api_base", None) or ""), str(getattr(model, "model_name", None) or "")


def _refused(model: Any, call: _Call, exc: BaseException) -> bool:
    """True when ``exc`` is a provider refusing the logprobs we added: remember and count it."""
    import openai

    if not call.changed or not isinstance(exc, openai.BadRequestError) or "logprob" not in str(exc).lower():
        return False
    identity = _identity(model)
    with _state.lock:
        _state.refused.add(identity)
        _state.refusals += 1
    logger.warning("observability: model %r at %r refused the logprobs we added (%s); the call was retried "
                   "without them and this model will not be asked again.", identity[1], identity[0], exc)
    return True


# ---- the wrappers -----------------------------------------------------------------------------
def _wrap_payload(original: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    def _get_request_payload(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        payload = original(self, *args, **kwargs)
        if "messages" in payload:
            top = _top_to_add(self, payload)
            if top is not None:
                payload["logprobs"] = True
                payload["top_logprobs"] = top
                _state.added += 1
                call = _current_call.get()
                if call is not None:
                    call.changed = True
        return payload

    return _get_request_payload


def _wrap_params(original: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    def _get_invocation_params(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        params = original(self, *args, **kwargs)
        top = _top_to_add(self, params)
        if top is not None and not self._use_responses_api(params):
            params = {**params, "logprobs": True, "top_logprobs": top}
        return params

    return _get_invocation_params


def _wrap_call(original: Callable[..., Any]) -> Callable[..., Any]:
    def _generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = _Call()
        token = _current_call.set(call)
        try:
            return original(self, *args, **kwargs)
        except Exception as exc:
            if not _refused(self, call, exc):
                raise
        finally:
            _current_call.reset(token)
        token_ = _suppressed.set(True)
        try:
            return original(self, *args, **kwargs)
        finally:
            _suppressed.reset(token_)

    return _generate


def _wrap_acall(original: Callable[..., Any]) -> Callable[..., Any]:
    async def _agenerate(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = _Call()
        token = _current_call.set(call)
        try:
            return await original(self, *args, **kwargs)
        except Exception as exc:
            if not _refused(self, call, exc):
                raise
        finally:
            _current_call.reset(token)
        token_ = _suppressed.set(True)
        try:
            return await original(self, *args, **kwargs)
        finally:
            _suppressed.reset(token_)

    return _agenerate


def _wrap_stream(original: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    def _stream(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        # The request is sent on the first next(); a refusal can only come before any chunk.
        call = _Call()
        token = _current_call.set(call)
        iterator = original(self, *args, **kwargs)
        retry = False
        try:
            first = next(iterator)
        except StopIteration:
            return
        except Exception as exc:
            if not _refused(self, call, exc):
                raise
            retry = True
        finally:
            _current_call.reset(token)
        if retry:
            token_ = _suppressed.set(True)
            iterator = original(self, *args, **kwargs)
            try:
                first = next(iterator)
            except StopIteration:
                return
            finally:
                _suppressed.reset(token_)
        yield first
        yield from iterator

    return _stream


def _wrap_astream(original: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def _astream(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        call = _Call()
        token = _current_call.set(call)
        iterator = original(self, *args, **kwargs)
        retry = False
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            return
        except Exception as exc:
            if not _refused(self, call, exc):
                raise
            retry = True
        finally:
            _current_call.reset(token)
        if retry:
            token_ = _suppressed.set(True)
            iterator = original(self, *args, **kwargs)
            try:
                first = await iterator.__anext__()
            except StopAsyncIteration:
                return
            finally:
                _suppressed.reset(token_)
        try:
            yield first
            async for chunk in iterator:
                yield chunk
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()  # close the HTTP stream now, as `yield from` does for sync streams

    return _astream
