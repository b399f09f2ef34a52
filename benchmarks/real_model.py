"""Context: the same configurations on the bundled real model (SmolLM2-135M via llama.cpp).

Generation dominates here, so the ratios are close to 1; this shows what the overhead means
next to a real, if tiny and local, model. The server is ours: started on a free 127.0.0.1
port and stopped by PID, also on failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from benchmarks.configs import Configuration
from benchmarks.harness import Measured, check_clean, interleave
from benchmarks.workloads import Sample, Workload
from observability._local_model import MODEL_NAME, LocalModelServer

REAL_PROMPT = "Tell a long story about a lighthouse keeper and a storm."


def real_stream(base_url: str, max_tokens: int) -> tuple[Workload, list[int]]:
    """The workload and the list it appends each run's count of streamed text chunks to."""
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(model=MODEL_NAME, base_url=base_url, api_key="unused",  # type: ignore[arg-type]
                       temperature=0, max_tokens=max_tokens, timeout=300, max_retries=0)
    bound = model.bind(logprobs=True, top_logprobs=5)
    counted: list[int] = []

    def run(callbacks: list[object]) -> Sample:
        start = time.perf_counter_ns()
        last = start
        tokens = 0
        for chunk in bound.stream(REAL_PROMPT, config={"callbacks": callbacks}):  # type: ignore[dict-item]
            tokens += bool(chunk.content)
            last = time.perf_counter_ns()
        end = time.perf_counter_ns()
        counted.append(tokens)
        return Sample(end - start, last - start)

    workload = Workload("real", f"real model, `.stream` of up to {max_tokens} tokens (SmolLM2-135M, llama.cpp)",
                        "token", max_tokens, run, max_tokens)
    return workload, counted


def measure(configs: Sequence[Configuration], rounds: int, max_tokens: int,
            progress: Callable[[str], None]) -> tuple[Workload, dict[str, Measured], float]:
    """Returns the workload, the results and the mean number of tokens actually streamed."""
    server = LocalModelServer(threads=1, parallel=1, ctx=2048)
    server.start()
    try:
        workload, counted = real_stream(server.base_url, max_tokens)
        results = interleave(workload, configs, rounds, progress=progress)
    finally:
        server.stop()
    check_clean(configs)
    return workload, results, sum(counted) / len(counted)
