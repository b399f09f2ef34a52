"""The command line, ``python -m observability``: demo, report, evaluate, doctor, serve-model.

The top of the import direction: it may import every room, the demo included; nothing imports it
but ``observability.__main__``.
"""
