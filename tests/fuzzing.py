"""How hard hypothesis searches, set once for the whole suite.

``make test`` runs every property at its full example count, freshly random each run.
``make check`` (the fast tier) sets ``FUZZ_SCALE=0.1``: a tenth of the examples, derandomised, so a
contributor's quick loop is short and gives the same answer twice. ``FUZZ_SCALE=10`` explores ten
times as far, for a long local run. Soak tests read ``SCALE`` too (tests/test_faults.py soaks one
endpoint fault of three in the fast tier).
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings

SCALE = float(os.environ.get("FUZZ_SCALE", "1"))


def fuzz(examples: int, **overrides: Any) -> settings:
    """Settings for a property test that runs ``examples`` examples at full strength."""
    options: dict[str, Any] = {
        "max_examples": max(1, round(examples * SCALE)),
        "deadline": None,
        "derandomize": SCALE < 1,  # the fast tier: a seeded sample
        "database": None,  # a fresh machine explores afresh and leaves nothing behind
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    }
    options.update(overrides)
    return settings(**options)
