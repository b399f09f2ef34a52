"""A plain LangChain app that knows nothing about confidence metrics.

It never imports ``observability``: run it under ``opentelemetry-instrument`` (or with
``OBSERVABILITY_LANGCHAIN=1`` where something imports the package) and its model calls are
observed anyway. It talks to any OpenAI-compatible endpoint:

    APP_BASE_URL   endpoint, e.g. http://127.0.0.1:8080/v1 (default: OpenAI itself)
    APP_MODEL      model name (default smollm2-135m, the bundled local model)
    APP_API_KEY    API key (default: OPENAI_API_KEY, else "unused" for a local server)
    APP_KEEP_RUNNING=1  after answering, keep running like a service until SIGTERM / Ctrl-C
                        (so a Prometheus can scrape it), then exit cleanly

It makes exactly five model calls: one chain invoke, one stream, a batch of two, one async invoke.

Under ``opentelemetry-instrument`` it first prints which LangChain tracers that command turned on:
every installed instrumentation registered for LangChain, ours (``langchain_confidence``) and any
peer, such as OpenInference's or OpenLLMetry's (both register as ``langchain``; each adds spans of
its own, and our figures then go onto their LLM span). ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=langchain``
turns the peers off and leaves ours on.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Mapping
from importlib.metadata import entry_points

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "What is 2 + 2?"]


def langchain_tracers(environ: Mapping[str, str] = os.environ) -> tuple[list[str], list[str]]:
    """The LangChain instrumentations ``opentelemetry-instrument`` loads here (on) and those
    ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` leaves out (off), as ``name (distribution)``."""
    disabled = {name.strip() for name in environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")}
    on: list[str] = []
    off: list[str] = []
    for entry in entry_points(group="opentelemetry_instrumentor"):
        if entry.name.startswith("langchain"):
            shown = f"{entry.name} ({entry.dist.name if entry.dist else entry.value})"
            (off if entry.name in disabled or "*" in disabled else on).append(shown)
    return sorted(on), sorted(off)


def say_which_tracers() -> None:
    if "opentelemetry.instrumentation.auto_instrumentation" not in sys.modules:
        return  # not under opentelemetry-instrument: it loaded nothing
    on, off = langchain_tracers()
    print(f"LangChain tracers turned on by opentelemetry-instrument: {', '.join(on) or 'none'}", flush=True)
    if off:
        print(f"  off (OTEL_PYTHON_DISABLED_INSTRUMENTATIONS): {', '.join(off)}", flush=True)
    elif any(not name.startswith("langchain_confidence ") for name in on):
        print("  each peer makes spans of its own; OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=langchain turns the peers "
              "off", flush=True)


def build_model() -> ChatOpenAI:
    return ChatOpenAI(
        model=os.environ.get("APP_MODEL", "smollm2-135m"),
        base_url=os.environ.get("APP_BASE_URL") or None,
        api_key=os.environ.get("APP_API_KEY") or os.environ.get("OPENAI_API_KEY") or "unused",
        temperature=0,
        max_tokens=16,
        timeout=120,
        max_retries=0,
    )


def main() -> int:
    say_which_tracers()
    model = build_model()
    chain = ChatPromptTemplate.from_messages([("system", "Answer in a few words."), ("human", "{question}")])
    chain = chain | model | StrOutputParser()

    print("invoke:", chain.invoke({"question": QUESTIONS[0]}), flush=True)
    print("stream:", "".join(chunk.text for chunk in model.stream(QUESTIONS[1])), flush=True)
    for answer in chain.batch([{"question": q} for q in QUESTIONS[1:]]):
        print("batch:", answer, flush=True)
    print("async:", asyncio.run(chain.ainvoke({"question": QUESTIONS[2]})), flush=True)
    print("done: 5 model calls", flush=True)

    if os.environ.get("APP_KEEP_RUNNING") == "1":
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
        try:
            while not stop.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
