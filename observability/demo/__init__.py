"""The demo (``python -m observability demo``): the demo app, the local model server, the child
process manager and the progress bar. Only the command line imports it; the library never does.
"""
