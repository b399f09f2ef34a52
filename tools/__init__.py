"""Development tools, outside the wheel: a real Prometheus launcher (``prometheus_server``) and the
no-Docker stack (``python -m tools.stack``, ``make stack``). The tests use them too."""
