"""Attaching without changing the app: ``observe_confidence()``, activation from ``OBSERVABILITY_*``
variables and the OpenTelemetry instrumentor. Sits above the LangChain layer. Internal: apps import
from ``observability`` and ``observability.instrumentation``.
"""
