"""The llama-cpp-python source distribution, whose vendor/llama.cpp/models/ holds real corpora for the tests.

Read in place from a cache folder (never copied into this repository); fetched once with pip when missing:
`pip download --no-binary :all: --no-deps llama-cpp-python==0.3.36` (pip's own HTTP cache serves a repeat).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

VERSION = "0.3.36"
CACHE = Path(os.environ.get("DISCOPOP_SDIST_CACHE") or Path.home() / ".cache" / "discopop-cli" / "sdist")
TEMPLATES = "vendor/llama.cpp/models/templates/"


def sdist_path() -> Path:
    path = CACHE / f"llama_cpp_python-{VERSION}.tar.gz"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps"]
        subprocess.run([*command, f"llama-cpp-python=={VERSION}", "-d", str(CACHE)], check=True)
    return path


def chat_templates() -> dict[str, str]:
    """Every chat template llama.cpp keeps for its own tests: file name (without .jinja) -> template."""
    found = {}
    with tarfile.open(sdist_path()) as archive:
        for member in archive.getmembers():
            _, _, inner = member.name.partition("/")
            if inner.startswith(TEMPLATES) and inner.endswith(".jinja") and member.isfile():
                handle = archive.extractfile(member)
                assert handle is not None
                found[inner[len(TEMPLATES) : -len(".jinja")]] = handle.read().decode("utf-8")
    return dict(sorted(found.items()))
