"""Which figure predicts a wrong answer on your labelled data (``python -m observability evaluate``),
the calibration map it fits, and its HTML page. Reads record files; standard library only.
"""
