"""The core: a provider's logprobs payload → token columns → ``ConfidenceReport`` (figures,
low-confidence spans, JSON fields), and the calibration map that turns one figure into P(right).

Standard library only: nothing here knows LangChain, OpenTelemetry or Prometheus, so it scores a
raw OpenAI response as well as a LangChain one. Internal: apps import from ``observability``.
"""
