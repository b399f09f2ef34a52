"""Interleaved rounds: every configuration once per round, in a rotating order, in one process.

Headline figures are ratios: in each round a configuration's time is divided by the baseline's
time of the same round, and the median of those per-round ratios is reported, so slow phases of
a shared machine hit both sides of a ratio alike. Absolute µs figures are medians too, for scale.
"""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler, CallbackManager
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk, LLMResult

from benchmarks.configs import BASELINE, NOOP, Configuration
from benchmarks.fake_model import FakeLogprobChatModel
from benchmarks.workloads import Sample, Workload


@dataclass
class Measured:
    """All samples of one configuration on one workload."""

    samples: list[Sample] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # per round, against the baseline
    before_end_ratios: list[float] = field(default_factory=list)
    peak_kib: float | None = None

    def median_us(self, units: int) -> float:
        return statistics.median(s.total_ns for s in self.samples) / units / 1000

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def spread(self) -> tuple[float, float]:
        """The interquartile range of the per-round ratios."""
        if len(self.ratios) < 4:
            return min(self.ratios), max(self.ratios)
        q = statistics.quantiles(self.ratios, n=4)
        return q[0], q[2]


def check_clean(configs: Sequence[Configuration]) -> None:
    """Our handlers must end every workload with no open run and no failure of their own."""
    for config in configs:
        handler = config.handler
        if handler is not None and (handler.open_runs or handler.errors):
            raise AssertionError(f"{config.name}: open_runs={handler.open_runs}, errors={dict(handler.errors)}")


Probe = tuple[str, Callable[[], Sample]]
"""A named extra timed in every round next to the configurations (e.g. the read floor)."""


def interleave(workload: Workload, configs: Sequence[Configuration], rounds: int, *,
               probes: Sequence[Probe] = (), warmup: int = 1,
               progress: Callable[[str], None] = lambda _: None) -> dict[str, Measured]:
    """Run ``rounds`` rounds of every configuration (and probe); the first must be the baseline."""
    if configs[0].name != BASELINE:
        raise ValueError("the first configuration must be the baseline")

    def runner(config: Configuration) -> Callable[[], Sample]:
        def run() -> Sample:
            with config.active():
                return workload.run(config.callbacks)
        return run

    runners: list[Probe] = [(c.name, runner(c)) for c in configs] + list(probes)
    results = {name: Measured() for name, _ in runners}
    for _ in range(warmup):
        for _, run in runners:
            run()
    for round_index in range(rounds):
        shift = round_index % len(runners)
        got: dict[str, Sample] = {}
        for name, run in runners[shift:] + runners[:shift]:
            gc.collect()
            got[name] = run()
        base = got[BASELINE]
        for name, sample in got.items():
            measured = results[name]
            measured.samples.append(sample)
            measured.ratios.append(sample.total_ns / base.total_ns)
            if sample.before_end_ns is not None and base.before_end_ns:
                measured.before_end_ratios.append(sample.before_end_ns / base.before_end_ns)
        progress(f"{workload.key} round {round_index + 1}/{rounds}")
    check_clean(configs)
    return results


def peak_memory(workload: Workload, configs: Sequence[Configuration], results: dict[str, Measured]) -> None:
    """Peak memory allocated during one run of the workload (tracemalloc), per configuration."""
    for config in configs:
        gc.collect()
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            with config.active():
                workload.run(config.callbacks)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        results[config.name].peak_kib = (peak - before) / 1024
    check_clean(configs)


# ---- per-chunk cost: LangChain's own dispatch path, without the model ---------------------
def _stream_chunks(n_tokens: int) -> list[ChatGenerationChunk]:
    """The chunks ``.stream`` hands to ``on_llm_new_token``, with response_metadata filled the
    way LangChain fills it."""
    model = FakeLogprobChatModel(n_tokens=n_tokens)
    chunks = list(model._chunks())
    for chunk in chunks:
        chunk.message.response_metadata = {**(chunk.generation_info or {}), **chunk.message.response_metadata}
    return chunks


def per_chunk(configs: Sequence[Configuration], rounds: int, n_tokens: int = 2000) -> dict[str, list[float]]:
    """ns per chunk spent in ``run_manager.on_llm_new_token`` for each configuration, per round,
    minus the same loop with no handler; run start and end are outside the timed loop."""
    chunks = _stream_chunks(n_tokens)
    message: list[list[BaseMessage]] = [[HumanMessage(content="Which city is the capital of Australia?")]]
    params = {"logprobs": True, "top_logprobs": 5, "model": "fake-logprobs"}
    end = LLMResult(generations=[[chunks[-1]]])
    out: dict[str, list[float]] = {c.name: [] for c in configs}

    def timed(config: Configuration) -> float:
        with config.active():
            manager = CallbackManager.configure(inheritable_callbacks=list(config.callbacks))
            (run,) = manager.on_chat_model_start({"name": "FakeLogprobChatModel"}, message, invocation_params=params)
            on_token = run.on_llm_new_token
            start = time.perf_counter_ns()
            for chunk in chunks:
                on_token(chunk.message.content, chunk=chunk)
            elapsed = time.perf_counter_ns() - start
            run.on_llm_end(end)
        return elapsed / len(chunks)

    for config in configs:
        timed(config)  # warm-up
    for round_index in range(rounds):
        shift = round_index % len(configs)
        got = {}
        for config in list(configs[shift:]) + list(configs[:shift]):
            gc.collect()
            got[config.name] = timed(config)
        for name, value in got.items():
            out[name].append(value - got[BASELINE])
    check_clean(configs)
    return out


def per_chunk_ratio(costs: dict[str, list[float]], name: str) -> float:
    """Median over rounds of (this configuration's per-chunk cost / the no-op handler's)."""
    return statistics.median(c / n for c, n in zip(costs[name], costs[NOOP], strict=True) if n > 0)


# ---- the floor: what merely reading the numbers costs --------------------------------------
def read_floor_probes(n_tokens: int, calls: int = 1) -> list[Probe]:
    """Two probes: reading every logprob of an ``n_tokens``-token, 5-alternative response once
    (pure Python, the least any scorer must do), and also taking exp() of each alternative (the
    least that entropy needs). ``calls`` repetitions per sample, to match a workload's units."""
    import math

    content = FakeLogprobChatModel(n_tokens=n_tokens)._content
    exp = math.exp

    def read() -> Sample:
        start = time.perf_counter_ns()
        for _ in range(calls):
            total = 0.0
            for entry in content:
                total += entry["logprob"]
                for alt in entry["top_logprobs"]:
                    total += alt["logprob"]
        return Sample(time.perf_counter_ns() - start)

    def read_exp() -> Sample:
        start = time.perf_counter_ns()
        for _ in range(calls):
            total = 0.0
            for entry in content:
                total += entry["logprob"]
                for alt in entry["top_logprobs"]:
                    total += exp(alt["logprob"])
        return Sample(time.perf_counter_ns() - start)

    return [(READ_FLOOR, read), (READ_EXP_FLOOR, read_exp)]


READ_FLOOR = "floor: read the logprobs"
READ_EXP_FLOOR = "floor: read + exp()"


# ---- end-of-run work: what on_llm_end costs, measured on the handler itself -----------------
class _Capture(BaseCallbackHandler):
    """Keeps the start and end events of one chat model run, as LangChain delivers them."""

    run_inline = True

    def __init__(self) -> None:
        self.start: tuple[Any, Any, dict[str, Any]] | None = None
        self.end: Any = None

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        kwargs = {k: v for k, v in kwargs.items() if k not in ("run_id", "parent_run_id")}
        self.start = (serialized, messages, kwargs)

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.end = response


def end_of_run_probe(name: str, handler_class: Any, n_tokens: int, calls: int = 1) -> Probe:
    """The handler's end-of-run work on an invoked ``n_tokens``-token, 5-alternative response:
    ``on_llm_end`` alone (extract, score, build the record; ``exporters=()``, so no export), fed
    the very events ``invoke`` gives a handler. ``on_chat_model_start`` runs outside the timer.
    ``calls`` runs per sample, like the floor probes."""
    capture = _Capture()
    FakeLogprobChatModel(n_tokens=n_tokens).invoke("Which city is the capital of Australia?",
                                                  config={"callbacks": [capture]})
    if capture.start is None or capture.end is None:
        raise RuntimeError("the fake model's invoke did not deliver start and end events")
    serialized, messages, start_kwargs = capture.start
    response = capture.end
    handler = handler_class(exporters=())
    reports: list[Any] = []
    handler.on_report = reports.append

    def run() -> Sample:
        elapsed = 0
        for _ in range(calls):
            run_id = uuid.uuid4()
            handler.on_chat_model_start(serialized, messages, run_id=run_id, **start_kwargs)
            start = time.perf_counter_ns()
            handler.on_llm_end(response, run_id=run_id)
            elapsed += time.perf_counter_ns() - start
        if len(reports) != calls or reports[-1].report is None or reports[-1].report.token_count != n_tokens:
            raise AssertionError(f"{name}: expected {calls} scored records of {n_tokens} tokens, got {reports[-1:]}")
        if handler.open_runs or handler.errors:
            raise AssertionError(f"{name}: open_runs={handler.open_runs}, errors={dict(handler.errors)}")
        reports.clear()
        return Sample(elapsed)

    return name, run


END_OF_RUN = "end of run: ours"
BEFORE_END_OF_RUN = "end of run: before"
