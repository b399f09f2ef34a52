"""Leak check: many runs ending ok, in error or cancelled, then count what is left behind.

Each run is a short ``.stream`` or ``invoke`` of the fake model, chosen at random (seeded):
ok (stream to the end, or invoke), error (the model raises mid-stream) or cancelled (the
caller breaks out of the stream, so LangChain closes the generator with ``GeneratorExit``).
tracemalloc traces the whole loop; its current size is read every tenth of the runs, after a
``gc.collect()`` and after ``flush()`` (the span processor's queue holds up to 2,048 finished
spans between exports: without a flush the readings swing by megabytes with its fill level).
The report gives the growth from the first checkpoint to the last and the largest swing.
"""

from __future__ import annotations

import collections
import gc
import random
import time
import tracemalloc
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, cast

from benchmarks.fake_model import FakeLogprobChatModel
from benchmarks.workloads import PROMPT
from observability import ConfidenceCallbackHandler, ResponseRecord
from observability.langchain.dedupe import CLAIMS

KINDS = ("ok stream", "ok invoke", "error", "cancelled")


@dataclass
class LeakReport:
    runs: int
    by_kind: dict[str, int]
    by_status: dict[str, int]
    open_runs: int
    open_claims: int
    evicted_runs: int
    handler_errors: dict[str, int]
    checkpoints_kib: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def growth_kib(self) -> float:
        """Traced memory at the last checkpoint minus the first (after the first tenth of runs)."""
        return self.checkpoints_kib[-1] - self.checkpoints_kib[0]

    @property
    def swing_kib(self) -> float:
        """The largest minus the smallest checkpoint."""
        return max(self.checkpoints_kib) - min(self.checkpoints_kib)

    @property
    def growth_bytes_per_run(self) -> float:
        counted = self.runs - self.runs // max(1, len(self.checkpoints_kib))
        return self.growth_kib * 1024 / counted if counted else 0.0


def run_leak_check(exporters: list[Any], runs: int = 100_000, *, tokens: int = 8, seed: int = 11,
                   checkpoints: int = 10, flush: Callable[[], object] = lambda: None,
                   progress: Callable[[str], None] = lambda _: None) -> LeakReport:
    statuses: collections.Counter[str] = collections.Counter()

    def count(record: ResponseRecord) -> None:
        statuses[record.status] += 1

    handler = ConfidenceCallbackHandler(exporters=exporters, on_report=count)
    config: Any = {"callbacks": [handler]}
    ok = FakeLogprobChatModel(n_tokens=tokens)
    failing = FakeLogprobChatModel(n_tokens=tokens, fail_after=tokens // 2)
    rng = random.Random(seed)
    kinds: collections.Counter[str] = collections.Counter()

    def one() -> None:
        kind = rng.choice(KINDS)
        kinds[kind] += 1
        if kind == "ok stream":
            for _ in ok.stream(PROMPT, config=config):
                pass
        elif kind == "ok invoke":
            ok.invoke(PROMPT, config=config)
        elif kind == "error":
            try:
                for _ in failing.stream(PROMPT, config=config):
                    pass
            except RuntimeError:
                pass
        else:
            stream = ok.stream(PROMPT, config=config)
            for index, _ in enumerate(stream):
                if index == tokens // 2:
                    break
            # what leaving a for loop over a temporary generator does at once
            cast(Generator[Any, None, None], stream).close()

    for _ in range(200):  # warm caches (pydantic, logging, metric label sets) before tracing
        one()
    kinds.clear()
    statuses.clear()
    marks: list[float] = []
    every = max(1, runs // checkpoints)
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        for index in range(1, runs + 1):
            one()
            if index % every == 0:
                flush()
                gc.collect()
                marks.append(tracemalloc.get_traced_memory()[0] / 1024)
                progress(f"leak check: {index:,} runs, {marks[-1]:,.0f} KiB traced, {handler.open_runs} open")
    finally:
        tracemalloc.stop()
    return LeakReport(runs=runs, by_kind=dict(kinds), by_status=dict(statuses), open_runs=handler.open_runs,
                      open_claims=len(CLAIMS),
                      evicted_runs=handler.evicted_runs, handler_errors=dict(handler.errors),
                      checkpoints_kib=marks, seconds=time.perf_counter() - started)
