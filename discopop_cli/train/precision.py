"""The precision plan: which dtype the weights are loaded in, which one the optimizer updates, and who keeps it.

Full-parameter training keeps float32 master weights whatever the launcher, because AdamW's steps at the paper's
learning rate (5e-7) are far below bfloat16's resolution: a weight of 0.02 has neighbours 7.8e-5 apart in
bfloat16, so a step of ~5e-7 applied to bfloat16 weights rounds back to the same value. How the float32 copy is
kept depends on the launch:

- one device or DDP: the weights are loaded in float32 and `bf16: true` runs the forward and backward passes under
  `torch.autocast(bfloat16)` (accelerate's mixed precision; transformers' Trainer turns it on from `bf16`), so
  the matmuls run in bfloat16 while AdamW updates float32 weights. Loading in bfloat16 here would make AdamW
  update bfloat16 weights: nothing else keeps a float32 copy.
- DeepSpeed (ZeRO-1/2/3) with bf16: the engine holds bfloat16 weights and keeps float32 partitions for the
  optimizer (how the published run trained), so the weights can be loaded in the recipe's bfloat16.
- FSDP2 with mixed precision: accelerate upcasts the trainable parameters to float32 before sharding
  (`fsdp2_prepare_model`) and computes in bfloat16 (`MixedPrecisionPolicy`), so loading in bfloat16 is fine too.
- LoRA: the frozen base stays in the recipe's dtype; the adapters train in float32 (PEFT's
  `autocast_adapter_dtype`; under ZeRO-3 TRL keeps them in the base dtype and DeepSpeed's float32 partitions are
  their master copy).

Pure bfloat16 updates (`master_weights: bfloat16` in a recipe) load bfloat16 weights and let AdamW update them in
place: half the memory, and most updates at small learning rates round away. Only by name, with a notice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from discopop_cli.core.errors import UserError

SHARDED = ("fsdp", "zero1", "zero2", "zero3")
MASTER_CHOICES = ("float32", "bfloat16")


@dataclass(frozen=True)
class PrecisionPlan:
    load_dtype: str  # the dtype the policy's weights are loaded in
    compute: str  # what the forward and backward passes run in
    master: str  # the dtype of the weights AdamW updates
    master_holder: str  # who keeps those weights
    reference_dtype: str | None  # the reference model's weights (None: LoRA's disabled adapter is the reference)
    adapters: str | None = None  # LoRA adapters' dtype
    notice: str | None = None  # said once when the plan departs from the recipe as written

    def describe(self) -> str:
        parts = [f"weights loaded in {self.load_dtype}", f"compute {self.compute}"]
        if self.adapters:
            parts.append(f"LoRA adapters in {self.adapters}")
        parts.append(f"AdamW updates {self.master} weights ({self.master_holder})")
        if self.reference_dtype:
            parts.append(f"reference in {self.reference_dtype}")
        return ", ".join(parts)


def choose(
    *,
    bf16: bool,
    fp16: bool,
    recipe_dtype: str | None,
    peft: bool,
    launch_kind: str,
    accelerator: bool,
    master_weights: str = "float32",
    reference: bool = True,
) -> PrecisionPlan:
    """The plan for a recipe's precision keys on a launch ("single", "ddp", "fsdp", "zero1/2/3"); `reference`:
    whether the run has a reference model (DPO; with LoRA the disabled adapter is the reference instead).

    `accelerator` False is the CPU fallback: float32 throughout (recipes.check_no_accelerator turns bf16/fp16 off).
    """
    plan = _choose(bf16, fp16, recipe_dtype, launch_kind, accelerator, master_weights, peft=peft)
    return plan if reference and not peft else replace(plan, reference_dtype=None)


def _choose(
    bf16: bool,
    fp16: bool,
    recipe_dtype: str | None,
    launch_kind: str,
    accelerator: bool,
    master_weights: str,
    *,
    peft: bool,
) -> PrecisionPlan:
    if not accelerator:
        return PrecisionPlan("float32", "float32 (CPU)", "float32", "the model's own weights", "float32")
    half = "bfloat16" if bf16 else "float16" if fp16 else None
    compute = f"{half} autocast" if half else "float32"
    stored = recipe_dtype if recipe_dtype not in (None, "auto") else "float32"
    if master_weights == "bfloat16":
        if launch_kind in SHARDED:
            raise UserError(
                f"master_weights: bfloat16 is for one device or DDP; under {launch_kind} the launcher keeps float32 "
                "master weights itself (remove master_weights, or launch with --accelerate-config ddp)"
            )
        plan = PrecisionPlan(
            load_dtype="bfloat16",
            compute="bfloat16",
            master="bfloat16",
            master_holder="pure bfloat16, no float32 copy: updates below a weight's bfloat16 spacing round away",
            reference_dtype="bfloat16",
            notice="master_weights: bfloat16: AdamW updates bfloat16 weights in place, with no float32 copy; at "
            "small learning rates most updates round away (the precision plan in docs/topics/reproducing.md)",
        )
        return plan
    if peft:
        holder = "DeepSpeed's float32 partitions" if launch_kind.startswith("zero") else "PEFT's float32 adapters"
        return PrecisionPlan(stored, compute, "float32", holder, stored, adapters="float32")
    if launch_kind in SHARDED and half:
        holder = "DeepSpeed's float32 partitions" if launch_kind.startswith("zero") else "FSDP2's float32 upcast"
        return PrecisionPlan(stored, compute, "float32", holder, stored)
    notice = None
    if stored != "float32":
        notice = (
            f"dtype {stored} -> float32 for the trained weights: full-parameter training keeps float32 master "
            f"weights ({compute} for the passes); the reference model stays in {stored}. "
            "master_weights: bfloat16 would keep the recipe's dtype"
        )
    reference = half or "float32"
    return PrecisionPlan("float32", compute, "float32", "the model's own float32 weights", reference, notice=notice)
