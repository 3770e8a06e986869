"""Scaling out: re-run the same `discopop sft|align` command under `accelerate launch`.

The launcher is accelerate's own (`python -m accelerate.commands.launch`): torchrun for DDP and FSDP,
DeepSpeed's for ZeRO-3. The child processes run `python -m discopop_cli.cli COMMAND ...` with
`DISCOPOP_LAUNCHED=1`, so they train instead of launching again.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from discopop_cli.core.errors import UserError
from discopop_cli.core.suggest import suggest

CONFIG_DIR = Path(__file__).resolve().parents[2] / "recipes" / "accelerate_configs"
BUNDLED_CONFIGS = ("ddp", "fsdp", "zero3")
LAUNCHED_ENV = "DISCOPOP_LAUNCHED"


@dataclass
class LaunchOptions:
    accelerate_config: str | None = None
    num_processes: int | None = None
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None
    global_batch_size: int | None = None

    @property
    def wants_launch(self) -> bool:
        return self.accelerate_config is not None and os.environ.get(LAUNCHED_ENV) != "1"

    def validate(self, *, dry_run: bool = False) -> None:
        if self.num_processes is not None and self.num_processes < 1:
            raise UserError(f"--num-processes must be at least 1, got {self.num_processes}")
        if self.num_machines < 1:
            raise UserError(f"--num-machines must be at least 1, got {self.num_machines}")
        if not 0 <= self.machine_rank < self.num_machines:
            raise UserError(
                f"--machine-rank {self.machine_rank} is outside 0..{self.num_machines - 1} for {self.num_machines} machine(s)"
            )
        if self.num_machines > 1 and not self.main_process_ip:
            raise UserError("several machines need --main-process-ip (the address of machine rank 0)")
        if self.num_processes is not None and self.num_processes % self.num_machines:
            raise UserError(
                f"--num-processes {self.num_processes} (all machines together) does not divide over "
                f"{self.num_machines} machines; give a multiple of {self.num_machines}"
            )
        has_multi = self.num_machines > 1 or self.main_process_ip or self.main_process_port
        if has_multi and self.accelerate_config is None:
            raise UserError("--num-machines/--main-process-* need --accelerate-config (e.g. ddp, fsdp or zero3)")
        launched = os.environ.get(LAUNCHED_ENV) == "1"
        if self.num_processes is not None and self.accelerate_config is None and not (dry_run or launched):
            # Without a launch only one process trains: a global batch sized for N would come out N times smaller.
            raise UserError(
                f"--num-processes {self.num_processes} needs --accelerate-config (ddp, fsdp, zero3 or your YAML) "
                "to start the processes; without it, use it only with --dry-run"
            )
        if self.global_batch_size is not None and self.global_batch_size < 1:
            raise UserError(f"--global-batch-size must be positive, got {self.global_batch_size}")


def resolve_config(name_or_path: str) -> Path:
    """A bundled config by name (ddp, fsdp, zero3) or the user's own accelerate YAML."""
    if name_or_path in BUNDLED_CONFIGS:
        return CONFIG_DIR / f"{name_or_path}.yaml"
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    raise UserError(
        f"accelerate config '{name_or_path}' is neither a bundled one ({', '.join(BUNDLED_CONFIGS)})"
        f"{suggest(name_or_path, list(BUNDLED_CONFIGS))} nor a file; give one of those or a path to your YAML"
    )


def _config_values(path: Path) -> dict[str, Any]:
    import yaml

    from discopop_cli.core.yaml_text import YamlRefused, load_yaml_text

    try:
        values = load_yaml_text(path.read_text(encoding="utf-8")) or {}
    except YamlRefused as exc:
        raise UserError(f"accelerate config {path}: {exc}") from None
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        raise UserError(f"accelerate config {path} is not valid YAML; fix it or use a bundled one") from None
    if not isinstance(values, dict):
        raise UserError(f"accelerate config {path} must be a mapping of accelerate settings")
    return values


def total_processes(options: LaunchOptions) -> int:
    """Processes the run trains on: accelerate's WORLD_SIZE inside a launch, else what the options ask for."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    if options.num_processes is not None:
        return options.num_processes
    if options.accelerate_config is not None:
        return int(_config_values(resolve_config(options.accelerate_config)).get("num_processes", 1))
    return 1


def launch_kind(options: LaunchOptions) -> str:
    """How the weights are spread: "single", "ddp", "fsdp" or "zero1/2/3" (the memory and precision plans' `kind`).

    Inside a launch, accelerate's environment says it; before one, the accelerate config does.
    """
    if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
        return f"zero{os.environ.get('ACCELERATE_DEEPSPEED_ZERO_STAGE', '3')}"
    if os.environ.get("ACCELERATE_USE_FSDP") == "true":
        return "fsdp"
    processes = total_processes(options)
    if options.accelerate_config is not None and "WORLD_SIZE" not in os.environ:
        values = _config_values(resolve_config(options.accelerate_config))
        kind = str(values.get("distributed_type", "NO"))
        if kind == "DEEPSPEED":
            stage = (values.get("deepspeed_config") or {}).get("zero_stage", 3)
            return f"zero{stage}"
        if kind == "FSDP":
            return "fsdp"
    return "ddp" if processes > 1 else "single"


def apply_global_batch(training: dict[str, Any], global_batch: int, processes: int, source: str) -> str:
    """Set gradient accumulation so that per-device x processes x accumulation = global_batch, or refuse."""
    per_device = int(training.get("per_device_train_batch_size", 8))
    step = per_device * processes
    if global_batch % step:
        fits = [n for n in range(1, global_batch // per_device + 1) if (global_batch // per_device) % n == 0]
        counts = ", ".join(map(str, fits)) if global_batch % per_device == 0 else "none"
        raise UserError(
            f"{source} {global_batch} is not a multiple of {per_device} per device x {processes} "
            f"process(es) = {step}; process counts that divide it: {counts}; or change per_device_train_batch_size"
        )
    accumulation = global_batch // step
    before = training.get("gradient_accumulation_steps", 1)
    training["gradient_accumulation_steps"] = accumulation
    change = f"gradient_accumulation_steps {before} -> {accumulation}" if before != accumulation else "as written"
    return (
        f"global batch {global_batch} = {per_device} per device x {processes} process(es) x "
        f"{accumulation} accumulation ({change})"
    )


def launch(command: str, child_args: list[str], options: LaunchOptions) -> int:
    """Run `discopop COMMAND child_args` under `accelerate launch`; returns its exit code."""
    import torch

    config = resolve_config(options.accelerate_config or "ddp")
    values = _config_values(config)
    if values.get("distributed_type") == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        raise UserError(
            f"{config.name} uses DeepSpeed, which is not installed: pip install 'discopop-cli[deepspeed]' "
            "(or pick --accelerate-config ddp or fsdp)"
        )
    processes = options.num_processes or int(values.get("num_processes", 1))
    gpus = torch.cuda.device_count()
    if gpus == 0 and values.get("distributed_type") not in (None, "MULTI_GPU", "NO", "MULTI_CPU"):
        raise UserError(
            f"{config.name} ({values.get('distributed_type')}) needs GPUs and none was found; "
            "use --accelerate-config ddp to run several CPU processes"
        )
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "--num_processes",
        str(processes),
        "--num_machines",
        str(options.num_machines),
        "--machine_rank",
        str(options.machine_rank),
    ]
    if options.main_process_ip:
        launcher += ["--main_process_ip", options.main_process_ip]
    if options.main_process_port:
        launcher += ["--main_process_port", str(options.main_process_port)]
    if gpus == 0:
        # torchrun on a CPU-only machine: the trainer's use_cpu makes accelerate pick gloo (MULTI_CPU).
        launcher += ["--mixed_precision", "no", "--num_cpu_threads_per_process", "1"]
    launcher += ["-m", "discopop_cli.cli", command, *child_args]
    env = {**os.environ, LAUNCHED_ENV: "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    from discopop_cli.core.console import notice

    where = f" on {options.num_machines} machines" if options.num_machines > 1 else ""
    notice(f"launching {processes} process(es){where} with accelerate ({config.name})")
    return subprocess.run(launcher, env=env, check=False).returncode


def child_args(
    recipe: Path,
    overrides: list[str],
    output_dir: Path | None,
    force: bool,
    global_batch_size: int | None,
    resume: bool = False,
    unset: list[str] | None = None,
) -> list[str]:
    """The command line each launched process runs: the same command, minus the launch options."""
    args = [str(recipe)]
    for key in unset or []:
        args += ["--unset", key]
    for override in overrides:
        args += ["--set", override]
    if output_dir is not None:
        args += ["--output-dir", str(output_dir)]
    if force:
        args.append("--force")
    if resume:
        args.append("--resume")
    if global_batch_size is not None:
        args += ["--global-batch-size", str(global_batch_size)]
    return args


def bad_row_args(skip: bool, max_bad: str | None) -> list[str]:
    """--skip-bad-rows and --max-bad-rows as the launched processes get them."""
    args = ["--skip-bad-rows"] if skip else []
    return args + (["--max-bad-rows", max_bad] if max_bad is not None else [])


def resolve_processes(recipe: Any, options: LaunchOptions | None) -> int:
    """How many processes train, with the accumulation derived from the global batch where one is stated.

    `--global-batch-size` wins over the recipe's `global_batch_size`; with neither, the recipe's
    `gradient_accumulation_steps` stands as written.
    """
    from discopop_cli.core.console import notice

    options = options or LaunchOptions()
    processes = total_processes(options)
    training = recipe.training
    stated = recipe.extras.get("global_batch_size")
    if options.global_batch_size is not None:
        global_batch, source = options.global_batch_size, "--global-batch-size"
    elif stated is not None:
        global_batch, source = stated, f"{recipe.path.name}: global_batch_size"
        if "gradient_accumulation_steps" in recipe.overridden:
            raise UserError(
                f"--set gradient_accumulation_steps and the recipe's global_batch_size ({stated}) both set the batch; "
                "drop the --set, give --global-batch-size, or --unset global_batch_size to set the accumulation yourself"
            )
    else:
        return processes
    notice(apply_global_batch(training, global_batch, processes, source))
    return processes
