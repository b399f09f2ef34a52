"""Opt-in: make OpenAI-compatible chat models ask for logprobs when the app did not.

Off by default, because it changes the request the app sends. Turned on process-wide by
``enable_logprobs()`` (``OBSERVABILITY_ENABLE_LOGPROBS=true`` under zero-code activation) or for
one block by ``logprobs_enabled()`` (``observe_confidence(enable_logprobs=True)``).

What is patched, exactly: eight methods of
``langchain_openai.chat_models.base.BaseChatOpenAI`` — the base of ``ChatOpenAI``,
``AzureChatOpenAI`` and the OpenAI-compatible chat models built on it — each replaced on the
class by a wrapper that calls the original:

- ``_get_request_payload``: when the payload has neither ``logprobs`` nor ``top_logprobs`` (nor,
  for the Responses API, the ``include`` entry ``message.output_text.logprobs``), and the model
  is not known to reject them (``KNOWN_TO_REJECT``) nor refused them earlier in this process,
  adds ``logprobs=True`` and ``top_logprobs=N`` to a Chat Completions request, and
  ``include += ["message.output_text.logprobs"]`` and ``top_logprobs=N`` to a Responses API one.
- ``_get_invocation_params``: the same decision, so callbacks (and our ``logprobs`` label) see
  what was asked.
- ``_generate``, ``_agenerate``, ``_stream``, ``_astream`` (and ``_stream_responses``,
  ``_astream_responses``, where ``ChatOpenAI`` streams the Responses API): when a request we changed is
  answered with HTTP 400 naming logprobs, the same call is made once more without our addition,
  the model is remembered as refusing (never changed again in this process), and the refusal
  is counted in ``stats()["refusals"]`` and logged once. The user's call does not fail because of us;
  any other error is the app's and is re-raised untouched.

The Responses API part also wraps two functions of ``langchain_openai.chat_models.base`` that
hold the SDK's parsed response, to recover the logprobs langchain-openai drops
(``observability.langchain.responses_logprobs``). It is applied only when those two functions and the two
streaming methods have the signatures seen in langchain-openai 1.7/1.8; else Responses API
requests are left alone (one warning naming the langchain-openai version) and Chat Completions
are still patched.

Undone by ``disable_logprobs()`` / leaving the ``logprobs_enabled()`` block: when the last user
lets go, the saved original functions are put back on the class with ``setattr`` and nothing
of ours remains on it. The legacy completions ``OpenAI`` LLM is not patched.

Safety: before patching, ``incompatibility()`` checks that the first six methods and
``_use_responses_api`` (called by the ``_get_invocation_params`` wrapper) are defined on
``BaseChatOpenAI`` with the signatures seen in langchain-openai 1.x; when one is missing or
different (a langchain-openai release renamed it), nothing is patched and one warning says so.
Inside every wrapper our own code is guarded: if it fails, the original's result (or exception)
reaches the app exactly as without the patch, and the failure is logged once, by type only.
Logs name the model, the base URL scrubbed to scheme://host:port/path (no credentials, no query)
and exception types; never a provider's error text.
"""

from __future__ import annotations

import inspect
import logging
import re
import threading
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from observability.langchain import responses_logprobs as responses
from observability.langchain.payload import RESPONSES_LOGPROBS

logger = logging.getLogger("observability")

DEFAULT_TOP_LOGPROBS = 5
MAX_TOP_LOGPROBS = 20  # OpenAI's documented upper bound for top_logprobs

KNOWN_TO_REJECT: tuple[re.Pattern[str], ...] = (
    re.compile(r"^o\d"),                 # OpenAI o-series reasoning models refuse logprobs
    re.compile(r"^gpt-5"),               # the GPT-5 reasoning family, likewise
    re.compile(r"search"),               # gpt-4o(-mini)-search-preview
    re.compile(r"audio|realtime"),       # audio and realtime models
    re.compile(r"^deepseek-reasoner"),   # DeepSeek's reasoning model: 400 on logprobs
)
"""Model names (matched lower-case) whose requests are never changed."""

_PATCHED = ("_get_request_payload", "_get_invocation_params", "_generate", "_agenerate", "_stream", "_astream")
_PATCHED_RESPONSES = ("_stream_responses", "_astream_responses")  # ChatOpenAI streams the Responses API here

_MESSAGES: list[Any] = []  # a stand-in argument for the signature checks below
# name -> (kind, positional arguments after self, keyword arguments): what the wrappers rely on.
_EXPECTED: dict[str, tuple[str, tuple[Any, ...], dict[str, Any]]] = {
    "_use_responses_api": ("function", ({},), {}),
    "_get_request_payload": ("function", (_MESSAGES,), {"stop": None}),
    "_get_invocation_params": ("function", (), {"stop": None}),
    "_generate": ("function", (_MESSAGES, None, None), {}),
    "_agenerate": ("coroutine", (_MESSAGES, None, None), {}),
    "_stream": ("generator", (_MESSAGES, None, None), {}),
    "_astream": ("async generator", (_MESSAGES, None, None), {}),
}
_EXPECTED_RESPONSES: dict[str, tuple[str, tuple[Any, ...], dict[str, Any]]] = {
    "_stream_responses": ("generator", (_MESSAGES, None, None), {}),
    "_astream_responses": ("async generator", (_MESSAGES, None, None), {}),
}


class PatchUnavailable(RuntimeError):
    """The patch cannot be applied here; the message says why and what to do instead."""


class MissingDependency(PatchUnavailable):
    """langchain-openai is not installed."""


class Incompatible(PatchUnavailable):
    """langchain-openai's private methods are not the ones the wrappers were written for."""


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
        self.module_originals: dict[str, Any] = {}   # langchain_openai.chat_models.base functions
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


def responses_patched() -> bool:
    """Whether Responses API requests are changed and their logprobs recovered (see the module doc)."""
    return bool(_state.module_originals)


def enable_logprobs(top_logprobs: int = DEFAULT_TOP_LOGPROBS) -> None:
    """Turn logprobs on for every OpenAI-compatible chat model in the process (idempotent).

    Raises ``PatchUnavailable`` (nothing patched) when langchain-openai is missing or changed."""
    top = check_top_logprobs(top_logprobs)
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
    """Turn logprobs on for model calls made in this context (this task, its children).

    When the patch cannot apply (``PatchUnavailable``) the block runs unpatched after one warning."""
    top = check_top_logprobs(top_logprobs)
    try:
        with _state.lock:
            _acquire()
    except PatchUnavailable as exc:
        _warn_once(f"observability: logprobs are not turned on in this block: {exc}")
        yield
        return
    token = _block_top_logprobs.set(top)
    try:
        yield
    finally:
        _block_top_logprobs.reset(token)
        with _state.lock:
            _release()


def check_top_logprobs(value: object) -> int:
    """``value`` if it is a valid ``top_logprobs`` (0-20); else ``ValueError`` naming the fix."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOP_LOGPROBS:
        raise ValueError(f"top_logprobs must be a whole number from 0 to {MAX_TOP_LOGPROBS}, got {value!r}")
    return value


def incompatibility(cls: Any, expected: Mapping[str, tuple[str, tuple[Any, ...], dict[str, Any]]] = _EXPECTED,
                    ) -> str | None:
    """Why the wrappers do not fit ``cls`` (a method missing or with another signature), or None."""
    for name, (kind, args, kwargs) in expected.items():
        method = cls.__dict__.get(name)
        if not callable(method):
            return f"{cls.__name__}.{name} is missing"
        target = inspect.unwrap(method)
        actual = ("async generator" if inspect.isasyncgenfunction(target) else
                  "generator" if inspect.isgeneratorfunction(target) else
                  "coroutine" if inspect.iscoroutinefunction(target) else "function")
        if actual != kind:
            return f"{cls.__name__}.{name} is a {actual}, not a {kind}"
        try:
            inspect.signature(method).bind(None, *args, **kwargs)
        except (TypeError, ValueError):
            return f"{cls.__name__}.{name} does not take the arguments it took in langchain-openai 1.x"
    return None


def base_class() -> Any:
    """``BaseChatOpenAI``, or ``PatchUnavailable`` saying why the patch cannot apply."""
    try:
        from langchain_openai.chat_models.base import BaseChatOpenAI
    except ImportError as exc:
        missing = MissingDependency(f"langchain-openai cannot be imported ({type(exc).__name__}); install it (pip "
                                    "install 'langchain-confidence[openai]') or stop asking for the logprobs patch")
        raise missing from None
    problem = incompatibility(BaseChatOpenAI)
    if problem is not None:
        raise Incompatible(f"{problem}; this langchain-openai release is not one the logprobs patch knows, so "
                           "requests are left as the app builds them. Ask for logprobs in code instead: "
                           "ChatOpenAI(logprobs=True, top_logprobs=N)")
    return BaseChatOpenAI


def responses_incompatibility(cls: Any, module: Any) -> str | None:
    """Why the Responses API part does not fit this langchain-openai, or None."""
    problem = incompatibility(cls, _EXPECTED_RESPONSES)
    if problem is not None:
        return problem
    for name, (args, kwargs) in responses.EXPECTED.items():
        function = getattr(module, name, None)
        if not inspect.isfunction(function):
            return f"{module.__name__}.{name} is missing"
        try:
            inspect.signature(function).bind(*args, **kwargs)
        except (TypeError, ValueError):
            return f"{module.__name__}.{name} does not take the arguments it took in langchain-openai 1.7/1.8"
    return None


def _acquire() -> None:
    if _state.users == 0:
        BaseChatOpenAI = base_class()
        import langchain_openai.chat_models.base as module

        wrappers: dict[str, Callable[[Any], Any]] = {
            "_get_request_payload": _wrap_payload, "_get_invocation_params": _wrap_params,
            "_generate": _wrap_call, "_agenerate": _wrap_acall, "_stream": _wrap_stream, "_astream": _wrap_astream,
            "_stream_responses": _wrap_stream, "_astream_responses": _wrap_astream,
        }
        problem = responses_incompatibility(BaseChatOpenAI, module)
        names = _PATCHED if problem is not None else _PATCHED + _PATCHED_RESPONSES
        for name in names:
            original = BaseChatOpenAI.__dict__[name]
            _state.originals[name] = original
            setattr(BaseChatOpenAI, name, wrappers[name](original))
        if problem is None:
            for name, wrap in ((responses.RESULT_FUNCTION, responses.wrap_result),
                               (responses.CHUNK_FUNCTION, responses.wrap_chunk)):
                original = getattr(module, name)
                _state.module_originals[name] = original
                setattr(module, name, wrap(original, _our_failure))
        else:
            _warn_once(f"observability: OpenAI Responses API requests are left alone and their logprobs not "
                       f"recovered: {problem} (langchain-openai {_version('langchain-openai')}, a release the "
                       "patch does not know). Chat Completions requests are still asked for logprobs.")
    _state.users += 1


def _release() -> None:
    _state.users -= 1
    if _state.users == 0:
        import langchain_openai.chat_models.base as module
        from langchain_openai.chat_models.base import BaseChatOpenAI

        for name, original in _state.originals.items():
            setattr(BaseChatOpenAI, name, original)
        _state.originals.clear()
        for name, original in _state.module_originals.items():
            setattr(module, name, original)
        _state.module_originals.clear()


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "of unknown version"


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
    include = params.get("include")
    if isinstance(include, (list, tuple)) and RESPONSES_LOGPROBS in include:
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
    # Type only: the provider's error text may quote the request; the base URL may hold credentials.
    logger.warning("observability: model %r at %s refused the logprobs we added (%s); the call was retried "
                   "without them and this model will not be asked again.", identity[1], scrub_url(identity[0]),
                   type(exc).__name__)
    return True


def _refused_guarded(model: Any, call: _Call, exc: BaseException) -> bool:
    try:
        return _refused(model, call, exc)
    except Exception as ours:
        _our_failure("the refusal check", ours)
        return False  # the app's exception is re-raised as it was


def scrub_url(url: str) -> str:
    """``url`` as scheme://host:port/path: no user, password, query or fragment."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<unparsable URL>"
    return urllib.parse.urlunsplit((parts.scheme, host + port, parts.path, "", ""))


_failed_places: set[str] = set()
_warned: set[str] = set()


def _our_failure(where: str, exc: BaseException) -> None:
    """Our code in a wrapper failed: the app's call goes on as without the patch. Logged once per place."""
    if where not in _failed_places:
        _failed_places.add(where)
        logger.warning("observability: the logprobs patch failed in %s (%s); the app's call goes on as if "
                       "unpatched. Further failures here are not logged.", where, type(exc).__name__)


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


# ---- the wrappers -----------------------------------------------------------------------------
def _wrap_payload(original: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    def _get_request_payload(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        payload = original(self, *args, **kwargs)
        try:
            if not isinstance(payload, dict):
                return payload
            chat = "messages" in payload
            top = _top_to_add(self, payload) if chat or ("input" in payload and responses_patched()) else None
        except Exception as exc:
            _our_failure("_get_request_payload", exc)
            return payload
        if top is not None:
            payload.update(_asking(payload, top, chat))
            _state.added += 1
            call = _current_call.get()
            if call is not None:
                call.changed = True
        return payload

    return _get_request_payload


def _asking(request: Mapping[str, Any], top: int, chat: bool) -> dict[str, Any]:
    """What we add to a request (or its invocation parameters) to ask for ``top`` alternatives."""
    if chat:
        return {"logprobs": True, "top_logprobs": top}
    include = request.get("include")
    return {"include": [*(include if isinstance(include, (list, tuple)) else ()), RESPONSES_LOGPROBS],
            "top_logprobs": top}


def _wrap_params(original: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    def _get_invocation_params(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        params = original(self, *args, **kwargs)
        try:
            top = _top_to_add(self, params)
            chat = not self._use_responses_api(params)
            if top is not None and (chat or responses_patched()):
                return {**params, **_asking(params, top, chat)}
        except Exception as exc:
            _our_failure("_get_invocation_params", exc)
        return params

    return _get_invocation_params


def _wrap_call(original: Callable[..., Any]) -> Callable[..., Any]:
    def _generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = _Call()
        token = _current_call.set(call)
        try:
            return original(self, *args, **kwargs)
        except Exception as exc:
            if not _refused_guarded(self, call, exc):
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
            if not _refused_guarded(self, call, exc):
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
            if not _refused_guarded(self, call, exc):
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
            if not _refused_guarded(self, call, exc):
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
