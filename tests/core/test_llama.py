"""core.llama.load_llama: the real Gemma 3 270M GGUF loads through llama.cpp without its load-time notes reaching
the terminal (a plain `Llama(..., verbose=False)` prints one about the sliding-window cache), and a Ctrl-C during a
load is still honoured (tests/core/test_faults.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

_LOAD = """
import sys
from discopop_cli.demo import gemma3
path = gemma3.shipped_gguf()
if sys.argv[1] == "plain":
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, verbose=False)
else:
    from discopop_cli.core.llama import load_llama
    llm = load_llama(path, n_ctx=64)
print(len(llm.tokenize(b"Hello there")))
"""


@pytest.mark.parametrize("how", ["plain", "load_llama"])
def test_gemma_loads_without_notes_on_the_terminal(how: str) -> None:
    result = subprocess.run([sys.executable, "-c", _LOAD, how], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.split()[-1]) >= 2  # the model loaded and tokenizes
    # The plain load shows what load_llama keeps away: the check can fail.
    assert ("llama_kv_cache" in result.stderr) is (how == "plain")
