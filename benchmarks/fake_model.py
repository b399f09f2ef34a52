"""A chat model that costs nothing: it replays a prepared OpenAI-shaped response.

The tokens and their logprobs (each with ``TOP_LOGPROBS`` = 5 alternatives, ``bytes`` included,
exactly as OpenAI's chat completions API sends them) are built once per model object, so a
benchmark times only what LangChain and the instrumentation do with them. The chunks are shaped
like langchain-openai's: a role chunk without logprobs, one chunk per token carrying
``generation_info["logprobs"] = {"content": [entry], "refusal": None}``, then a finish chunk.
``invoke`` returns the whole list in one generation, as a non-streamed OpenAI response does.

``fail_after`` makes a stream raise ``RuntimeError`` after that many tokens (the error path).
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

TOP_LOGPROBS = 5
MODEL_NAME = "fake-logprobs"
# A small vocabulary with Korean and emoji so some tokens carry partial UTF-8 characters, as
# real byte-level tokenizers produce; the words are arbitrary.
_WORDS = (" the", " model", " is", " fairly", " sure", " about", " this", ",", ".", " 서울", " 은", " 🙂",
          " answer", " perhaps", " Canberra", " not", " Sydney", "\n")


def openai_logprobs_content(n_tokens: int, *, top_logprobs: int = TOP_LOGPROBS, seed: int = 7) -> list[dict[str, Any]]:
    """``n_tokens`` entries of an OpenAI ``logprobs.content`` list: about one token in eight is
    doubtful (probability below 0.5), the rest confident; alternatives sorted best first."""
    rng = random.Random(seed)
    entries: list[dict[str, Any]] = []
    for _ in range(n_tokens):
        doubtful = rng.random() < 0.125
        chosen_p = rng.uniform(0.15, 0.49) if doubtful else rng.uniform(0.80, 0.9999)
        rest = 1.0 - chosen_p
        # the other alternatives share part of the remaining mass, in decreasing order
        shares = sorted((rng.random() for _ in range(top_logprobs - 1)), reverse=True)
        total = sum(shares) or 1.0
        others = [rest * 0.9 * s / total for s in shares]
        probabilities = sorted([chosen_p, *others], reverse=True)
        words = rng.sample(_WORDS, top_logprobs)
        alternatives = [{"token": w, "logprob": math.log(p), "bytes": list(w.encode())}
                        for w, p in zip(words, probabilities, strict=True)]
        chosen = next(a for a in alternatives if math.isclose(math.exp(cast(float, a["logprob"])), chosen_p))
        entries.append({"token": chosen["token"], "logprob": chosen["logprob"], "bytes": chosen["bytes"],
                        "top_logprobs": alternatives})
    return entries


class FakeLogprobChatModel(BaseChatModel):
    """Replays ``n_tokens`` prepared tokens with OpenAI-shaped logprobs, streamed or not."""

    n_tokens: int = 100
    top_logprobs: int = TOP_LOGPROBS
    seed: int = 7
    fail_after: int | None = None
    _content: list[dict[str, Any]] = PrivateAttr(default_factory=list)
    _text: str = PrivateAttr(default="")

    def model_post_init(self, context: Any) -> None:
        self._content = openai_logprobs_content(self.n_tokens, top_logprobs=self.top_logprobs, seed=self.seed)
        self._text = "".join(entry["token"] for entry in self._content)

    @property
    def _llm_type(self) -> str:
        return "fake-openai-logprobs"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": MODEL_NAME, "logprobs": True, "top_logprobs": self.top_logprobs}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "openai"
        params["ls_model_name"] = MODEL_NAME
        return params

    # ---- the response, whole ------------------------------------------------------------
    def _result(self) -> ChatResult:
        metadata = {"model_name": MODEL_NAME, "model_provider": "openai", "finish_reason": "stop",
                    "id": "chatcmpl-fake", "logprobs": {"content": self._content, "refusal": None}}
        message = AIMessage(content=self._text, response_metadata=metadata,
                            usage_metadata={"input_tokens": 12, "output_tokens": self.n_tokens,
                                            "total_tokens": 12 + self.n_tokens})
        info = {"finish_reason": "stop", "logprobs": {"content": self._content, "refusal": None}}
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)],
                          llm_output={"model_name": MODEL_NAME, "id": "chatcmpl-fake"})

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return self._result()

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return self._result()

    # ---- the response, streamed ---------------------------------------------------------
    def _chunks(self) -> Iterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata={"model_provider": "openai"}))
        for index, entry in enumerate(self._content):
            if self.fail_after is not None and index >= self.fail_after:
                raise RuntimeError("fake model failure")
            yield ChatGenerationChunk(
                message=AIMessageChunk(content=entry["token"], response_metadata={"model_provider": "openai"}),
                generation_info={"logprobs": {"content": [entry], "refusal": None}},
            )
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", response_metadata={"model_provider": "openai"}),
            generation_info={"finish_reason": "stop", "model_name": MODEL_NAME},
        )

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        # Like langchain-openai, the model itself does not call on_llm_new_token: LangChain's
        # stream() does, once per chunk.
        yield from self._chunks()

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks():
            yield chunk
