"""Training at the speed the machine allows: what `discopop sft` and `discopop align` change, and the switch for each.

None of these changes a loss or a log-probability beyond float rounding (tests/train/test_speed.py and
test_lean_head.py check each one); each can be turned off with `DISCOPOP_SPEEDUPS_OFF`, a comma-separated list of
the names below (or `all`):

- `lean-head`: log-probabilities scored at completion positions only, by a lean CPU kernel (lean_head.py).
- `allocator`: glibc malloc keeps freed memory for reuse instead of returning it to the kernel after every step.
- `threads`: one torch thread per physical core (unless OMP_NUM_THREADS or torch's own setting says otherwise).
- `checkpointing`: activation checkpointing decided by the memory plan on a CPU (`checkpointing_plan`).
- `precompute`: reference log-probs computed once before training when every pair is seen more than once.
- `tied-gradient`: an LM head that is also the input embedding (Gemma) gets its two gradients added into `.grad` in
  place, in one process on a CPU (lean_head.accumulate_tied_gradient), instead of in a third full-size tensor.
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from discopop_cli.core.errors import UserError

SWITCH = "DISCOPOP_SPEEDUPS_OFF"
LEVERS = ("lean-head", "allocator", "threads", "checkpointing", "precompute", "tied-gradient")

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_FASTER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def turned_off() -> set[str]:
    """The levers DISCOPOP_SPEEDUPS_OFF names; an unknown name is a one-line error."""
    names = {name.strip() for name in os.environ.get(SWITCH, "").split(",") if name.strip()}
    if "all" in names:
        return set(LEVERS)
    unknown = sorted(names - set(LEVERS))
    if unknown:
        raise UserError(f"{SWITCH} names {unknown}; use a comma-separated list of {', '.join(LEVERS)}, or all")
    return names


def enabled(lever: str) -> bool:
    return lever not in turned_off()


def keep_freed_memory() -> str | None:
    """Stop glibc malloc from handing freed memory back to the kernel, so the next step reuses it.

    By default glibc serves every allocation above a threshold (128 KiB, rising to 32 MiB) with its own mmap and
    unmaps it on free, and trims the heap's top when 128 KiB are free. A training step allocates and frees the same
    large tensors (activations, logit tiles, gradients) every time, so each step faults all of that memory in again:
    13 million page faults and 21 s of system time in 3 Gemma 3 270M steps. Serving everything from the heap
    (M_MMAP_MAX = 0) and never trimming it (M_TRIM_THRESHOLD at its maximum) keeps those pages mapped; the process's
    peak is the same, and the memory goes back when it exits. Returns what it did, or None where it did nothing:
    another libc, or a faster allocator (jemalloc, tcmalloc, mimalloc) already preloaded.
    """
    if not enabled("allocator") or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    preloaded = os.environ.get("LD_PRELOAD", "")
    if any(name in preloaded for name in _FASTER_ALLOCATORS):
        return None
    libc = ctypes.CDLL(None)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return None
    if mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1:
        return "malloc keeps freed memory for reuse (M_MMAP_MAX=0, M_TRIM_THRESHOLD=max)"
    return None


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (its affinity), within a cgroup CPU quota if one is set.

    Two hyperthreads of one core share its floating-point units; a second torch thread on them only adds
    synchronisation. Falls back to the CPU count where the topology cannot be read.
    """
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            cores.add(("cpu", cpu))
            continue
        cores.add((package, core))
    count = max(len(cores), 1)
    quota = _cgroup_cpu_quota()
    return min(count, max(1, math.ceil(quota))) if quota else count


def _cgroup_cpu_quota() -> float | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def set_threads() -> str | None:
    """One torch intra-op thread per physical core, unless the user chose (OMP_NUM_THREADS, MKL_NUM_THREADS)."""
    if not enabled("threads") or os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return None
    import torch

    cores = physical_cores()
    if torch.get_num_threads() != cores:
        torch.set_num_threads(cores)
    return f"{cores} torch thread(s), one per physical core"


def tune_process() -> list[str]:
    """The process-wide levers, once a training command has validated its recipe: what each did."""
    turned_off()  # a misspelt switch is refused before anything loads
    return [done for done in (keep_freed_memory(), set_threads()) if done]


# -- reference log-probs -----------------------------------------------------------------------------------------


def passes_over_data(config: Any, pairs: int | None) -> float:
    """How many times training sees each pair: num_train_epochs, or max_steps' share of the data where it is set."""
    max_steps = getattr(config, "max_steps", -1) or -1
    if max_steps > 0 and pairs:
        batch = config.per_device_train_batch_size * config.gradient_accumulation_steps * max(config.world_size, 1)
        return max_steps * batch / pairs
    return float(config.num_train_epochs)


def plan_reference_precompute(config: Any, pairs: int | None, *, recipe_sets_it: bool) -> str | None:
    """Turn `precompute_ref_log_probs` on when it saves work; return the notice, or None when nothing changed.

    Precomputing runs the reference once per pair before training instead of once per pair per epoch: a saving
    only when each pair is seen more than once, and only for a frozen reference (not `sync_ref_model`). A recipe
    that sets the option either way keeps it.
    """
    if not enabled("precompute") or recipe_sets_it or config.precompute_ref_log_probs or config.sync_ref_model:
        return None
    passes = passes_over_data(config, pairs)
    if passes <= 1:
        return None
    config.precompute_ref_log_probs = True
    return (
        f"reference log-probs are computed once before training, as each pair is seen {passes:g} times "
        f"(precompute_ref_log_probs: false or {SWITCH}=precompute keeps them per step)"
    )


# -- activation checkpointing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointingDecision:
    on: bool
    reason: str


# The step without checkpointing must fit in this share of the memory available; the rest is left for the
# allocator, the data and the rest of the machine.
ROOM_TO_SPARE = 0.5


def checkpointing_plan(
    recipe_setting: bool | str | None,
    *,
    on_gpu: bool,
    step_bytes_without: int | None,
    available_bytes: int | None,
) -> CheckpointingDecision:
    """Activation checkpointing for this run.

    On a GPU the recipe's setting stands (`auto` decides as on a CPU). On a CPU memory is rarely the limit and
    checkpointing costs a second forward through every layer (with LoRA, TRL's `enable_input_require_grads` even
    drives it through the frozen layers), so it is off when the step without it (`step_bytes_without`, from the
    memory plan) fits in ROOM_TO_SPARE of the memory available, on otherwise.
    """
    if on_gpu and recipe_setting != "auto":
        return CheckpointingDecision(bool(recipe_setting), "the recipe's setting")
    if step_bytes_without is None or available_bytes is None:
        return CheckpointingDecision(bool(recipe_setting) if recipe_setting != "auto" else True, "no memory plan")
    fits = step_bytes_without <= ROOM_TO_SPARE * available_bytes
    gb = 1024**3
    sizes = f"{step_bytes_without / gb:.1f} GB without it, {available_bytes / gb:.1f} GB available"
    return CheckpointingDecision(not fits, f"the memory plan: {sizes}")


def available_memory() -> int | None:
    """Bytes this process can use now: MemAvailable, within a cgroup memory limit if one is set."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except OSError:
        return None
    try:
        limit_text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return available
    if limit_text != "max" and available is not None:
        return min(available, int(limit_text) - used)
    return available


def plan_checkpointing(recipe: Any, config: Any, processes: int) -> str | None:
    """Apply `checkpointing_plan` to `config` from the run's memory plan; the notice when it changed the setting."""
    import torch

    setting = recipe.extras.get("activation_checkpointing") or recipe.training.get(
        "activation_checkpointing", config.activation_checkpointing
    )
    on_gpu = torch.cuda.is_available() and not config.use_cpu
    if not enabled("checkpointing") or (on_gpu and setting != "auto"):
        return None
    from discopop_cli.train.run_plan import plan_run

    run = plan_run(recipe, "ddp" if processes > 1 else "single", processes, accelerator=False)
    without = None
    if run.memory is not None:
        # Every process of a CPU launch shares this machine's memory.
        without = processes * (run.memory.model_states + run.memory.reference + run.memory.activations_full)
    decision = checkpointing_plan(
        setting, on_gpu=on_gpu, step_bytes_without=without, available_bytes=available_memory()
    )
    before = bool(config.activation_checkpointing)
    config.activation_checkpointing = config.gradient_checkpointing = decision.on
    if decision.on == before:
        return None
    state = "on" if decision.on else "off"
    return f"activation checkpointing {state} ({decision.reason}; {SWITCH}=checkpointing keeps the recipe's setting)"
