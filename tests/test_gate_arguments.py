"""``confidence_fallback`` refuses wrong arguments at once, naming the fix (no model needed)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.runnables import Runnable, RunnableLambda
from prometheus_client import CollectorRegistry

from observability.langchain.gate import confidence_fallback
from observability.testing import FakeLogprobChatModel


def test_wrong_arguments_raise_at_once_naming_the_fix() -> None:
    primary, fallback = FakeLogprobChatModel(), RunnableLambda[Any, str](lambda _: "no")
    with pytest.raises(ValueError, match="metric must be one of"):
        confidence_fallback(primary, fallback, threshold=0.5, metric="perplexity")
    with pytest.raises(ValueError, match="on_missing"):
        confidence_fallback(primary, fallback, threshold=0.5, on_missing="ignore")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="threshold must be a number"):
        confidence_fallback(primary, fallback, threshold="high")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Runnables"):
        confidence_fallback(primary, lambda _: "no", threshold=0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), -float("inf"), 60, -0.1, 1.0000001])
@pytest.mark.parametrize("metric", ["sequence_probability", "min_token_probability", "mean_top_margin",
                                    "mean_token_negentropy", "top_k_mass", "/age"])
def test_a_threshold_outside_the_metrics_range_is_refused_when_the_gate_is_built(threshold: float,
                                                                                 metric: str) -> None:
    with pytest.raises(ValueError, match=r"must be between 0 and 1 .*0\.6, not 60"):
        confidence_fallback(FakeLogprobChatModel(), RunnableLambda[Any, str](lambda _: "no"), threshold=threshold,
                            metric=metric)


def test_the_ends_of_the_range_are_accepted_and_a_callables_threshold_must_be_finite() -> None:
    primary, fallback = FakeLogprobChatModel(), RunnableLambda[Any, str](lambda _: "no")
    for threshold in (0, 0.0, 1, 1.0):
        assert confidence_fallback(primary, fallback, threshold=threshold).threshold == threshold
    assert confidence_fallback(primary, fallback, threshold=60, metric=lambda r: True).threshold == 60
    for threshold in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            confidence_fallback(primary, fallback, threshold=threshold, metric=lambda r: True)


class Recorder:
    """A Runnable pair that records the keyword arguments each branch was called with."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def branch(self, name: str) -> Runnable[Any, Any]:
        def run(value: Any, **kwargs: Any) -> str:
            self.seen.append((name, kwargs))
            return f"{name}:{value}"
        return RunnableLambda(run)


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "batch", "abatch", "stream", "astream"])
def test_keyword_arguments_reach_both_branches_in_every_call_mode(mode: str) -> None:
    """Like ``with_fallbacks``; no model runs in the primary, so on_missing="fallback" runs both."""
    recorder = Recorder()
    gate = confidence_fallback(recorder.branch("primary"), recorder.branch("fallback"), threshold=0.5,
                               on_missing="fallback", registry=CollectorRegistry())
    options: dict[str, Any] = {"stop": ["\n"], "temperature": 0}

    async def call_async() -> Any:
        if mode == "ainvoke":
            return await gate.ainvoke("q", **options)
        if mode == "abatch":
            return await gate.abatch(["q"], **options)
        return [chunk async for chunk in gate.astream("q", **options)]

    calls: dict[str, Callable[[], Any]] = {
        "invoke": lambda: gate.invoke("q", **options), "batch": lambda: gate.batch(["q"], **options),
        "stream": lambda: list(gate.stream("q", **options)),
    }
    output = calls[mode]() if mode in calls else asyncio.run(call_async())
    assert output in ("fallback:q", ["fallback:q"])
    assert recorder.seen == [("primary", options), ("fallback", options)]
