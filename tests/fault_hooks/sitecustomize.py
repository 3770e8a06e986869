"""Loaded at start-up by the `discopop` processes the fault tests start (this folder is on their PYTHONPATH): it
holds the command at one chosen point, so the test can kill or interrupt it there, mid-write.

DISCOPOP_TEST_PAUSE=MODULE:ATTRIBUTE[.METHOD]:before|after names the point: the first call of that function, before
or after it runs. On arrival the process writes DISCOPOP_TEST_READY (a path), then waits until DISCOPOP_TEST_GO (a
path) exists, or forever without it. Processes without DISCOPOP_TEST_PAUSE are left alone.
"""

from __future__ import annotations

import functools
import importlib
import os
import time
from pathlib import Path
from typing import Any


def _hold() -> None:
    Path(os.environ["DISCOPOP_TEST_READY"]).write_text(str(os.getpid()))
    go = os.environ.get("DISCOPOP_TEST_GO")
    while not (go and Path(go).exists()):
        time.sleep(0.05)


def _install(spec: str) -> None:
    module_name, attribute, when = spec.split(":")
    owner: Any = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    arrived = False

    @functools.wraps(original)
    def held(*args: Any, **kwargs: Any) -> Any:
        nonlocal arrived
        first = not arrived
        arrived = True
        if first and when == "before":
            _hold()
        result = original(*args, **kwargs)
        if first and when == "after":
            _hold()
        return result

    setattr(owner, name, held)


if os.environ.get("DISCOPOP_TEST_PAUSE"):
    _install(os.environ["DISCOPOP_TEST_PAUSE"])
