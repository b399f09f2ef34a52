"""``confidence_fallback`` refuses wrong arguments at once, naming the fix (no model needed)."""

from __future__ import annotations

import pytest
from langchain_core.runnables import RunnableLambda

from observability.langchain.gate import confidence_fallback
from observability.testing import FakeLogprobChatModel


def test_wrong_arguments_raise_at_once_naming_the_fix() -> None:
    primary, fallback = FakeLogprobChatModel(), RunnableLambda(lambda _: "no")
    with pytest.raises(ValueError, match="metric must be one of"):
        confidence_fallback(primary, fallback, threshold=0.5, metric="perplexity")
    with pytest.raises(ValueError, match="on_missing"):
        confidence_fallback(primary, fallback, threshold=0.5, on_missing="ignore")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="threshold must be a number"):
        confidence_fallback(primary, fallback, threshold="high")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Runnables"):
        confidence_fallback(primary, lambda _: "no", threshold=0.5)  # type: ignore[arg-type]
