"""Zero-code activation for OpenTelemetry users: ``opentelemetry-instrument python app.py``.

The public home of ``ConfidenceInstrumentor`` (the ``opentelemetry_instrumentor`` entry point
``langchain_confidence``); the code is in ``observability.attach.instrumentor``.
"""

from observability.attach.instrumentor import ConfidenceInstrumentor

__all__ = ["ConfidenceInstrumentor"]
