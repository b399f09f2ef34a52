"""Zero-code activation for OpenTelemetry users: ``opentelemetry-instrument python app.py``.

``ConfidenceInstrumentor`` is registered under the ``opentelemetry_instrumentor`` entry point as
``langchain_confidence``, so ``opentelemetry-instrument`` calls ``instrument()`` before the app
starts; disable it there with ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=langchain_confidence`` or
``OBSERVABILITY_LANGCHAIN=0``. It is a thin adapter over ``observability.attach.activation``:
``instrument()`` attaches one handler to every LangChain run of the process, configured from the
``OBSERVABILITY_*`` variables, and ``uninstrument()`` detaches it and undoes everything
``instrument()`` started (the opt-in logprobs patch, the ``/metrics`` server).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from observability.attach.activation import detach_process_wide, instrument_from_env
from observability.langchain.enable_logprobs import check_top_logprobs

_INSTRUMENTS = ("langchain-core >= 1.0",)


class ConfidenceInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Observe every LangChain run of the process; configured by environment and keywords.

    ``instrument(**options)`` takes OpenTelemetry's usual ``tracer_provider`` /
    ``meter_provider``, a prometheus_client ``registry``, ``enable_logprobs`` / ``top_logprobs``
    (override ``OBSERVABILITY_ENABLE_LOGPROBS`` / ``OBSERVABILITY_TOP_LOGPROBS``) and any
    ``ConfidenceCallbackHandler`` option (``on_report``, ``exporters``, ...). A wrong keyword
    raises at once; a bad ``OBSERVABILITY_*`` value is logged once as an error naming the variable
    and the app runs on without the part it controls (see docs/configuration.md).
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    def _instrument(self, **options: Any) -> None:
        # Keyword arguments are code, checked at once; the environment is logged, never raised.
        overrides: dict[str, Any] = {k: options.pop(k) for k in ("enable_logprobs", "top_logprobs") if k in options}
        if not isinstance(overrides.get("enable_logprobs", False), bool):
            raise TypeError(f"enable_logprobs must be True or False, got {overrides['enable_logprobs']!r}")
        if "top_logprobs" in overrides:
            check_top_logprobs(overrides["top_logprobs"])
        instrument_from_env(overrides, options)

    def _uninstrument(self, **options: Any) -> None:
        detach_process_wide()
