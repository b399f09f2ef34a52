"""Zero-code activation for OpenTelemetry users: ``opentelemetry-instrument python app.py``.

``ConfidenceInstrumentor`` is registered under the ``opentelemetry_instrumentor`` entry point as
``langchain_confidence``, so ``opentelemetry-instrument`` calls ``instrument()`` before the app
starts; disable it there with ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=langchain_confidence`` or
``OBSERVABILITY_LANGCHAIN=0``. It is a thin adapter over ``observability._attach``:
``instrument()`` attaches one handler to every LangChain run of the process, configured from the
``OBSERVABILITY_*`` variables, and ``uninstrument()`` detaches it and undoes everything
``instrument()`` started (the opt-in logprobs patch, the ``/metrics`` server).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from observability._attach import attach_process_wide, detach_process_wide, process_wide_config
from observability._config import AttachConfig

logger = logging.getLogger("observability")

_INSTRUMENTS = ("langchain-core >= 1.0",)


class ConfidenceInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Observe every LangChain run of the process; configured by environment and keywords.

    ``instrument(**options)`` takes OpenTelemetry's usual ``tracer_provider`` /
    ``meter_provider``, a prometheus_client ``registry``, ``enable_logprobs`` / ``top_logprobs``
    (override ``OBSERVABILITY_ENABLE_LOGPROBS`` / ``OBSERVABILITY_TOP_LOGPROBS``) and any
    ``ConfidenceCallbackHandler`` option (``on_report``, ``exporters``, ...).
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    def _instrument(self, **options: Any) -> None:
        config = AttachConfig.from_env()
        if config.activation == "off":
            logger.info("observability: OBSERVABILITY_LANGCHAIN is off; not attaching to LangChain runs")
            return
        overrides = {k: options.pop(k) for k in ("enable_logprobs", "top_logprobs") if k in options}
        if overrides:
            config = dataclasses.replace(config, **overrides)
        if not options and process_wide_config() == config:
            return  # OBSERVABILITY_LANGCHAIN=1 already attached this very handler on import
        attach_process_wide(config, **options)

    def _uninstrument(self, **options: Any) -> None:
        detach_process_wide()
