"""ChatLiteLLM with our handler, run in LiteLLM's own virtualenv (``make litellm``: litellm pins
``importlib-metadata<9``, the development environment ``importlib-metadata`` 10) by
tests/test_provider_litellm.py. Invokes and streams the OpenAI-compatible server at ``argv[1]``
through ``litellm``'s ``openai/`` route (model ``argv[2]``, question ``argv[3]``), writing every
record to the JSON-lines file ``argv[4]``.
"""

from __future__ import annotations

import sys


def main(base_url: str, model: str, question: str, record_file: str) -> None:
    from langchain_litellm import ChatLiteLLM

    from observability import ConfidenceCallbackHandler

    handler = ConfidenceCallbackHandler(exporters=(), record_to=record_file)
    chat = ChatLiteLLM(model=f"openai/{model}", api_base=base_url, api_key="unused", temperature=0, max_tokens=12,
                       model_kwargs={"logprobs": True, "top_logprobs": 3})
    config = {"callbacks": [handler]}
    print(chat.invoke(question, config=config).text)
    print("".join(chunk.text for chunk in chat.stream(question, config=config)))


if __name__ == "__main__":
    main(*sys.argv[1:5])
