"""Context: the same configurations on the bundled real model (SmolLM2-135M via llama.cpp).

Generation dominates here, so the ratios are close to 1 and, on a busy machine, the model's own
jitter is larger than any handler's cost. So the handler's share is also measured directly:
``TimedHandler`` (ours, full) adds up the time spent inside its own callbacks, as a share of
each run's wall time. The server is ours: started on a free 127.0.0.1
port and stopped by PID, also on failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from langchain_core.callbacks import BaseCallbackHandler
from pydantic import SecretStr

from benchmarks.configs import Configuration
from benchmarks.harness import Measured, check_clean, interleave
from benchmarks.workloads import Sample, Workload
from observability import ConfidenceCallbackHandler
from observability.demo.model_server import MODEL_NAME, LocalModelServer

REAL_PROMPT = "Tell a long story about a lighthouse keeper and a storm."


def real_stream(base_url: str, max_tokens: int) -> tuple[Workload, list[int]]:
    """The workload and the list it appends each run's count of streamed text chunks to."""
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(model=MODEL_NAME, base_url=base_url, api_key=SecretStr("unused"),
                       temperature=0, max_completion_tokens=max_tokens, timeout=300, max_retries=0)
    bound = model.bind(logprobs=True, top_logprobs=5)
    counted: list[int] = []

    def run(callbacks: list[object]) -> Sample:
        start = time.perf_counter_ns()
        last = start
        tokens = 0
        for chunk in bound.stream(REAL_PROMPT, config={"callbacks": cast(list[BaseCallbackHandler], callbacks)}):
            tokens += bool(chunk.content)
            last = time.perf_counter_ns()
        end = time.perf_counter_ns()
        counted.append(tokens)
        return Sample(end - start, last - start)

    workload = Workload("real", f"real model, `.stream` of up to {max_tokens} tokens (SmolLM2-135M, llama.cpp)",
                        "token", max_tokens, run, max_tokens)
    return workload, counted


class TimedHandler(ConfidenceCallbackHandler):
    """Ours, adding up the wall time spent inside its model-run callbacks in ``inside_ns``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inside_ns = 0

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter_ns()
        super().on_chat_model_start(*args, **kwargs)
        self.inside_ns += time.perf_counter_ns() - start

    def on_llm_new_token(self, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter_ns()
        super().on_llm_new_token(*args, **kwargs)
        self.inside_ns += time.perf_counter_ns() - start

    def on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter_ns()
        super().on_llm_end(*args, **kwargs)
        self.inside_ns += time.perf_counter_ns() - start


def measure(configs: Sequence[Configuration], rounds: int, max_tokens: int, exporters: list[Any],
            progress: Callable[[str], None]) -> tuple[Workload, dict[str, Measured], float, dict[str, float]]:
    """Returns the workload, the results, the mean number of tokens actually streamed, and
    ours-full's time inside its callbacks (``inside_us`` per run, ``share`` of the wall time)."""
    server = LocalModelServer(threads=1, parallel=1, ctx=2048)
    server.start()
    try:
        workload, counted = real_stream(server.base_url, max_tokens)
        results = interleave(workload, configs, rounds, progress=progress)
        timed = TimedHandler(exporters=exporters)
        wall = sum(workload.run([timed]).total_ns for _ in range(rounds))
        if timed.open_runs or timed.errors:
            raise AssertionError(f"timed handler: open_runs={timed.open_runs}, errors={dict(timed.errors)}")
    finally:
        server.stop()
    check_clean(configs)
    inside = {"inside_us": timed.inside_ns / rounds / 1000, "share": timed.inside_ns / wall, "runs": rounds}
    return workload, results, sum(counted) / len(counted), inside
