"""The LangChain layer: the callback handler (LangChain events → core → exporters), reading
LangChain's payloads, the confidence gate, the opt-in logprobs patch and the peer tracers.

Imports the core and the exporters, never ``attach``, the command line or the demo. Internal: apps
import from ``observability``.
"""
