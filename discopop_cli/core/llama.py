"""llama.cpp models loaded the way every command loads them: a Ctrl-C during the load honoured, and llama.cpp's
load-time notes (Gemma 3's vocabulary, its sliding-window cache) kept off the terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from discopop_cli.core.faults import c_call_interrupts


@contextmanager
def native_stderr_quiet() -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null: llama.cpp writes some notes straight to it, whatever `verbose` says."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_llama(path: Path, **settings: Any) -> Any:
    """`llama_cpp.Llama` for the GGUF at `path`, quietly; `settings` are Llama's (n_ctx, n_threads, ...).

    Raises what Llama raises (ImportError without llama-cpp-python, ValueError for a file it cannot load): each
    command words its own error.
    """
    from llama_cpp import Llama

    # llama.cpp logs the load through a ctypes callback, which would drop a Ctrl-C: c_call_interrupts keeps it.
    with c_call_interrupts(), native_stderr_quiet():
        return Llama(model_path=str(path), verbose=False, **settings)
