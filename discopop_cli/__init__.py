"""discopop-cli: reproduce and extend DiscoPOP-aligned chat models with TRL.

The packages, bottom up (each `__init__` says what it owns and what it may import): `core`; `data`, `recipes`,
`losses`; `train`, `merge`, `export`, `demo`; `cli` on top.
"""

from discopop_cli.core import moved as _moved

__version__ = "0.2.0"

_moved.install()
