"""Metric labels, shared by both metric systems: ``provider``, ``model`` and an opt-in allowlist
of run metadata keys, each with a cap on distinct values.

Only keys the user lists become labels, never run ids or free text by default. Each label
(provider and model included) keeps at most ``max_label_values`` distinct values; later new values
become ``other``, so a key that turns out to hold free text cannot blow up the number of series. A missing provider or
model reads ``unknown``; a missing metadata value reads ``""`` (what Prometheus shows for an
absent label). ``model`` is the requested model (the response's only when none was requested:
one deployment, one label value, ok and failed calls alike). Values longer than
``MAX_LABEL_VALUE_LENGTH`` and non-scalar values count as ``other``. The provider is the GenAI
registry's name for it (``_providers.provider_name``: ``azure`` → ``azure.ai.openai``), the value the
span's ``gen_ai.provider.name`` carries too.

``field_paths`` is the allowlist of JSON Pointer paths (``/name``, ``/address/city``) whose per-field
figures become the ``path`` label of the field histogram; ``*`` as a whole segment matches any
one segment (``/tags/*`` matches ``/tags/0``, ``/tags/1`` …). The label value is the matched path,
capped like every other label (beyond ``max_label_values`` distinct paths, or over
``MAX_LABEL_VALUE_LENGTH`` characters: ``other``). A path not on the list is not observed.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

from observability.core.types import ResponseRecord
from observability.exporters._providers import provider_name
from observability.exporters._strings import utf8_safe

DEFAULT_MAX_LABEL_VALUES = 50
MAX_LABEL_VALUE_LENGTH = 100
UNKNOWN = "unknown"
OTHER = "other"
BASE_LABELS = ("provider", "model")
FIELD_PATH_LABEL = "path"
"""The field histogram's extra label (Prometheus) / ``llm.confidence.field.path`` (OpenTelemetry)."""
RESERVED_LABELS = frozenset({"provider", "model", "status", "logprobs", "le", "quantile", "job", "instance"})
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class MetricLabels:
    """Turns a record into label values: ``label_names`` = provider, model, then the allowlisted keys.

    ``metadata_labels``: metadata keys (``RunnableConfig(metadata=...)``) to use as labels; each must
    be a valid Prometheus label name not in ``RESERVED_LABELS``. One instance can be shared by
    several exporters so they agree on which values overflowed into ``other``. Thread-safe.
    """

    def __init__(self, metadata_labels: Iterable[str] = (), *,
                 max_label_values: int = DEFAULT_MAX_LABEL_VALUES, field_paths: Iterable[str] = ()) -> None:
        if isinstance(metadata_labels, str):
            raise TypeError(f"metadata_labels must be a list of keys, not the string {metadata_labels!r}")
        keys = tuple(dict.fromkeys(metadata_labels))
        for key in keys:
            if not isinstance(key, str) or not _LABEL_NAME.fullmatch(key) or key.startswith("__"):
                raise ValueError(f"metadata label {key!r} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)")
            if key in RESERVED_LABELS:
                raise ValueError(f"metadata label {key!r} clashes with a label we set; rename the metadata key")
        if isinstance(max_label_values, bool) or not isinstance(max_label_values, int) or max_label_values < 1:
            raise ValueError(f"max_label_values must be a positive int, got {max_label_values!r}")
        if isinstance(field_paths, str):
            raise TypeError(f"field_paths must be a list of JSON Pointers, not the string {field_paths!r}")
        paths = tuple(dict.fromkeys(field_paths))
        for path in paths:
            if not isinstance(path, str) or not (path == "" or path.startswith("/")):
                raise ValueError(f"field path {path!r} is not a JSON Pointer (RFC 6901: '' or starting with '/')")
        if paths and FIELD_PATH_LABEL in keys:
            raise ValueError(f"metadata label {FIELD_PATH_LABEL!r} clashes with the field histogram's label "
                             "(field_paths is set); rename the metadata key")
        self.field_paths = paths
        self._exact_paths = frozenset(p for p in paths if "*" not in p.split("/"))
        self._path_patterns = tuple(p.split("/") for p in paths if "*" in p.split("/"))
        self.metadata_keys = keys
        self.max_label_values = max_label_values
        self.label_names: tuple[str, ...] = BASE_LABELS + keys
        self.overflowed = 0
        """How many label values were replaced by ``other`` (cap reached, too long, not a scalar)."""
        self._seen: dict[str, set[str]] = {key: set() for key in (*self.label_names, FIELD_PATH_LABEL)}
        self._lock = threading.Lock()

    def values(self, record: ResponseRecord) -> tuple[str, ...]:
        """Label values in ``label_names`` order. Provider and model are capped like metadata
        values: a proxy that stamps every answer with its own deployment id must not make a
        series per answer."""
        provider = self._value("provider", provider_name(record.provider))
        # The requested model names the deployment: providers answer under dated names
        # (gpt-4o-mini -> gpt-4o-mini-2024-07-18), and a failed call has no answer at all.
        model = self._value("model", record.start.request_model or record.response_model or UNKNOWN)
        if not self.metadata_keys:
            return (provider, model)
        metadata = record.start.metadata
        return (provider, model, *(self._value(key, metadata.get(key)) for key in self.metadata_keys))

    def field_path(self, path: str) -> str | None:
        """The ``path`` label value for a field at ``path``: None when the path is not allowlisted
        (not observed), else the path, or ``other`` once the cap is reached."""
        if path not in self._exact_paths and not any(_matches(pattern, path) for pattern in self._path_patterns):
            return None
        return self._value(FIELD_PATH_LABEL, path)

    def _value(self, key: str, raw: object) -> str:
        if raw is None:
            return ""
        if isinstance(raw, (str, int, float, bool)):
            value = utf8_safe(str(raw))
            if len(value) <= MAX_LABEL_VALUE_LENGTH:
                seen = self._seen[key]
                if value in seen:
                    return value
                with self._lock:
                    if value in seen or len(seen) < self.max_label_values:
                        seen.add(value)
                        return value
        self.overflowed += 1
        return OTHER


def _matches(pattern: list[str], path: str) -> bool:
    segments = path.split("/")
    return len(segments) == len(pattern) and all(p in ("*", s) for p, s in zip(pattern, segments, strict=True))
