"""A handler attached twice (explicitly and by a hook, or by two hooks) exports each run once.

The rule: each exporter gets each run once, however many handlers see the run. A handler's
exporters form share groups: the default exporters (``exporters=None``, or zero-code
activation) are one group, because every such set feeds the same global providers and
registry; any other exporter is a group of its own, known by identity. When a run starts, each
group goes to the first handler that claims it for that run; a later handler sharing the group
leaves it out for that run, and counts the run in ``duplicate_runs``. Each handler still calls
its own ``on_report`` for every model run it sees. Handlers with no exporters share nothing.

LangChain does not promise the order in which it calls handlers (merging callback managers goes
through a set), so which of two sharing handlers exports a given run is not specified; that it is
exactly one is.

A claim lives from a run's start until its owner pops the run (end, error, eviction), so the
table holds at most the open runs of all handlers. Owners are held weakly: a claim of a handler
dropped with runs still open no longer counts, and the table is bounded anyway.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any
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


def _hooks(exporters: Sequence[Any], name: str) -> tuple[Callable[..., None], ...]:
    return tuple(hook for hook in (getattr(e, name, None) for e in exporters) if callable(hook))


class Exporting:
    """The exporters one handler sends one run to, with their optional lifecycle hooks."""

    __slots__ = ("end_hooks", "exporters", "start_hooks")

    def __init__(self, exporters: Sequence[Any]) -> None:
        self.exporters: tuple[Any, ...] = tuple(exporters)
        self.start_hooks: tuple[Callable[..., None], ...] = _hooks(self.exporters, "on_run_start")
        self.end_hooks: tuple[Callable[..., None], ...] = _hooks(self.exporters, "on_run_end")


NOTHING = Exporting(())


class ExportGroups:
    """A handler's exporters in share groups; ``claim`` says which ones a run goes to."""

    def __init__(self, exporters: Sequence[Any], default_count: int = 0) -> None:
        """``exporters[:default_count]`` are the default set (one group); each other one is a group."""
        self.everything = Exporting(exporters)
        self._groups: list[tuple[object, tuple[Any, ...]]] = []
        if default_count:
            self._groups.append((DEFAULT_EXPORTERS_KEY, tuple(exporters[:default_count])))
        self._groups += [(id(e), (e,)) for e in exporters[default_count:]]
        self._keys = tuple(key for key, _ in self._groups)

    def claim(self, run_id: UUID, owner: object) -> Exporting:
        """``everything`` when no other handler exports this run to a shared group (the usual case)."""
        if not self._groups:
            return self.everything
        won = [group for key, group in self._groups if CLAIMS.claim(run_id, (key,), owner)]
        if len(won) == len(self._groups):
            return self.everything
        return Exporting([e for group in won for e in group]) if won else NOTHING

    def release(self, run_id: UUID, owner: object) -> None:
        if self._keys:
            CLAIMS.release(run_id, self._keys, owner)

