"""The one thing pyproject.toml cannot say: the optional C accelerator of the scoring loop.

``observability._speedups`` is built when a C compiler and Python's headers are present; when
the build fails, installation goes on and the handler extracts tokens and scores them in
Python (``score_confidence``), with the identical result, several times slower.
``-ffp-contract=off``: no fused multiply-add, so the C sums round exactly as Python's do.
"""

import os

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "observability._speedups",
            sources=["observability/_speedups.c"],
            optional=True,
            extra_compile_args=[] if os.name == "nt" else ["-ffp-contract=off"],
        )
    ]
)
