"""What a confidence gate adds to the time to the first streamed token, on the bundled real model.

A gate cannot show a token before it has decided, and it decides on the primary's whole answer:
so a kept answer's first token arrives when the bare model's last one would, and a fallback's
first token after the primary's whole answer plus the fallback's own first token. Measured in one
run, rounds interleaved (bare, kept, fell back), the same question and ``max_tokens``, streamed with
``.stream()`` and timed to the first chunk with text; reported as medians and as ratios to the bare
model's median time to first token, and to its median time to the whole answer.

    python -m benchmarks.gate_first_token [--rounds 15] [--max-tokens 32]

The server is ours: started on a free 127.0.0.1 port and stopped by PID, also on failure.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterable
from typing import Any

from pydantic import SecretStr

from observability.demo.model_server import MODEL_NAME, LocalModelServer
from observability.langchain.gate import confidence_fallback

QUESTION = "Name three rivers in Europe."


def first_and_last(chunks: Iterable[Any]) -> tuple[float, float]:
    """Seconds to the first chunk with text and to the end of the stream."""
    start = time.perf_counter()
    first = None
    for chunk in chunks:
        if first is None and getattr(chunk, "content", chunk):
            first = time.perf_counter() - start
    end = time.perf_counter() - start
    if first is None:
        raise AssertionError("the stream carried no text")
    return first, end


def measure(base_url: str, rounds: int, max_tokens: int) -> dict[str, dict[str, float]]:
    from langchain_openai import ChatOpenAI
    from prometheus_client import CollectorRegistry

    model = ChatOpenAI(model=MODEL_NAME, base_url=base_url, api_key=SecretStr("unused"),
                       temperature=0, max_completion_tokens=max_tokens, timeout=300, max_retries=0, logprobs=True,
                       top_logprobs=3)
    registry = CollectorRegistry()
    kept = confidence_fallback(model, model, threshold=0.0, name="kept", registry=registry)
    fell_back = confidence_fallback(model, model, threshold=0.5, metric=lambda _: False, name="fell_back",
                                    registry=registry)
    runs = {"bare model": lambda: model.stream(QUESTION), "gate, kept": lambda: kept.stream(QUESTION),
            "gate, fell back": lambda: fell_back.stream(QUESTION)}
    for run in runs.values():  # warm the server's cache and the client's connection
        first_and_last(run())
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            times[name].append(first_and_last(run()))
    medians = {name: {"first": statistics.median(f for f, _ in ts), "end": statistics.median(e for _, e in ts)}
               for name, ts in times.items()}
    bare = medians["bare model"]
    for figures in medians.values():
        figures["first / bare first"] = figures["first"] / bare["first"]
        figures["first / bare end"] = figures["first"] / bare["end"]
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    server = LocalModelServer(threads=1, parallel=1, ctx=2048)
    server.start()
    try:
        medians = measure(server.base_url, args.rounds, args.max_tokens)
    finally:
        server.stop()
    print(f"time to first token, median of {args.rounds} interleaved rounds, max_tokens={args.max_tokens}")
    print(f"{'':<18}{'first (ms)':>11}{'end (ms)':>10}{'÷ bare first':>14}{'÷ bare end':>12}")
    for name, m in medians.items():
        print(f"{name:<18}{m['first'] * 1000:>11.1f}{m['end'] * 1000:>10.1f}{m['first / bare first']:>14.2f}"
              f"{m['first / bare end']:>12.2f}")


if __name__ == "__main__":
    main()
