# The C accelerator of observability._score (observability/_speedups.c); optional at install.
from typing import Any

from observability._types import LowConfidenceSpan

def sum_chat_entries(
    entries: list[Any], log_threshold: float, floor: float, /
) -> tuple[int, float, float, float, int, float, int, float, int, float, list[tuple[int, float]],
           list[LowConfidenceSpan] | None] | None: ...
def use_span_type(cls: type[LowConfidenceSpan], /) -> None: ...
