"""Which devices this machine has, and telling the libraries that guess."""

from __future__ import annotations

import os


def accelerator_available() -> bool:
    """A CUDA, XPU or MPS device is here."""
    import torch

    return (
        torch.cuda.is_available()
        or (hasattr(torch, "xpu") and torch.xpu.is_available())
        or torch.backends.mps.is_available()
    )


def tell_deepspeed_when_cpu_only() -> None:
    """On a machine without an accelerator, name the CPU to DeepSpeed before anything imports it.

    transformers and accelerate import DeepSpeed whenever it is installed (the `deepspeed` extra); finding no GPU, it
    logs a WARNING that it fell back to the CPU, in the middle of a command's output.
    """
    if "DS_ACCELERATOR" not in os.environ and not accelerator_available():
        os.environ["DS_ACCELERATOR"] = "cpu"
