"""ChatVertexAI with our handler, run in Vertex's own virtualenv (``make vertex``:
google-cloud-aiplatform pins ``protobuf<7``, the development environment protobuf 7) by
tests/test_provider_vertex.py. Its REST transport is pointed at the loopback endpoint ``argv[1]``
with anonymous credentials; it invokes and streams ``argv[2]``, writing every record to ``argv[3]``."""

from __future__ import annotations

import sys


def main(endpoint: str, question: str, record_file: str) -> None:
    from google.auth.credentials import AnonymousCredentials
    from langchain_google_vertexai import ChatVertexAI

    from observability import ConfidenceCallbackHandler

    handler = ConfidenceCallbackHandler(exporters=(), record_to=record_file)
    chat = ChatVertexAI(model_name="gemini-2.0-flash", project="loopback", location="us-central1",
                        api_endpoint=endpoint, api_transport="rest", credentials=AnonymousCredentials(),
                        logprobs=3, temperature=0, max_output_tokens=12, max_retries=0)
    config = {"callbacks": [handler]}
    print(chat.invoke(question, config=config).text)
    print("".join(chunk.text for chunk in chat.stream(question, config=config)))


if __name__ == "__main__":
    main(*sys.argv[1:4])
