"""llama.cpp's quantizer in a child process of `discopop export`, reporting progress on stdout.

It runs apart because llama.cpp reports through a ctypes log callback, and a KeyboardInterrupt raised while Python
runs inside a ctypes callback is printed and dropped (ctypes cannot carry it back through C): in the exporting
process, Ctrl-C during a k-quant was swallowed and the export went on to completion. The exporter only waits on
this child's pipe, so Ctrl-C reaches it at once and it kills the child. The child ignores SIGINT, and stops by
itself if the exporter dies (it then has another parent), so it never writes on for nobody.

Protocol, one line each on stdout: `step DONE TOTAL` per tensor, `error TEXT` for llama.cpp's error lines.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import sys

_QUANTIZE_STEP = re.compile(rb"\[\s*(\d+)/\s*(\d+)\]")


def report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    source, destination, ftype = argv
    parent = os.getppid()
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype)
    params.nthread = os.cpu_count() or 1

    @llama_cpp.llama_log_callback
    def on_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if os.getppid() != parent:
            os._exit(1)  # the exporter is gone: nobody will use or clean up what this writes
        step = _QUANTIZE_STEP.search(text or b"")
        if step:
            report(f"step {int(step.group(1))} {int(step.group(2))}")
        elif level == 3:  # GGML_LOG_LEVEL_ERROR
            report("error " + " ".join((text or b"").decode("utf-8", "replace").split()))

    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
    return llama_cpp.llama_model_quantize(source.encode(), destination.encode(), ctypes.byref(params))


if __name__ == "__main__":
    sys.exit(1 if main(sys.argv[1:]) else 0)
