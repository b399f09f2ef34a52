"""Which handler observes a run that several handlers see (explicit + hook, two hooks).

The rule: handlers that share an exporter observe each run once. Every handler has a set of
share keys — its exporters (by identity), plus one key for "the default exporters" when it was
built with ``exporters=None``, since those all feed the same global providers and registry.
When a run starts, the first handler to claim it under any of its keys observes it; a later
handler sharing any key with the owner skips the run. Handlers with no exporters
(``exporters=()``, scoring for ``on_report`` only) share nothing and always observe.

A claim lives from the owner's run start until the owner pops the run (end, error, eviction),
so the table holds at most the open runs of all handlers. Owners are held weakly: a claim of a
handler that was dropped with runs still open no longer counts, and the table is bounded anyway.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from uuid import UUID

DEFAULT_EXPORTERS_KEY = "observability:default-exporters"
MAX_CLAIMS = 100_000


class RunClaims:
    """A locked, bounded map of ``(run id, share key) -> owning handler``."""

    def __init__(self, max_claims: int = MAX_CLAIMS) -> None:
        self._owners: dict[tuple[UUID, object], weakref.ref[object]] = {}
        self._lock = threading.Lock()
        self._max_claims = max_claims

    def claim(self, run_id: UUID, keys: Iterable[object], owner: object) -> bool:
        """Claim ``run_id`` for ``owner`` under every key; False if another owner holds any of them."""
        with self._lock:
            pairs = [(run_id, key) for key in keys]
            for pair in pairs:
                held = self._owners.get(pair)
                holder = held() if held is not None else None
                if holder is not None and holder is not owner:
                    return False
            me = weakref.ref(owner)
            for pair in pairs:
                self._owners[pair] = me
            while len(self._owners) > self._max_claims:
                del self._owners[next(iter(self._owners))]
            return True

    def release(self, run_id: UUID, keys: Iterable[object], owner: object) -> None:
        with self._lock:
            for key in keys:
                held = self._owners.get((run_id, key))
                if held is not None and held() in (None, owner):  # ours, or its owner is gone
                    del self._owners[(run_id, key)]

    def __len__(self) -> int:
        return len(self._owners)


CLAIMS = RunClaims()
"""The process-wide table every ``ConfidenceCallbackHandler`` consults."""
