"""The memory plan: bytes per device for a model config, a launch and the training settings, before anything loads.

One pure function, `plan_memory(shape, launch, settings)`, and the dataclasses it reads; `ModelShape.from_config`
reads a transformers `config.json` (as a dict). No torch import: `discopop align|sft --dry-run` prints the plan, a
run checks it against the GPU before loading, and a caller deciding on activation checkpointing can compare
`MemoryPlan.activations_full` with `activations_checkpointed` (both are always computed).

Model states, per device, for P parameters (the trainable ones, T = P without LoRA), N processes, and L the
largest single module (the embedding, for most LLMs), in bytes:

| launch | weights | gradients | optimizer (AdamW) | working |
|---|---|---|---|---|
| one device, float32 master | 4P | 4T | 8T | - |
| DDP, float32 master | 4P | 4T + 4T (the reducer's buckets) | 8T | - |
| FSDP2, float32 master | 4P/N | 4T/N | 8T/N | 4L (one unit gathered: bf16 weights and grads) |
| ZeRO-1 (bf16) | 2P | 2T + 4T/N | 12T/N | - |
| ZeRO-2 (bf16) | 2P | 6T/N | 12T/N | - |
| ZeRO-3 (bf16) | 2P/N | 4T/N | 12T/N | 4L |

ZeRO-3's row is DeepSpeed's own estimator without offload (`estimate_zero3_model_states_mem_needs`, deepspeed
0.19 `runtime/zero/stage3.py`: `4 * largest_layer_params + 18 * total_params / total_gpus`): bfloat16 partitions,
float32 gradient partitions, float32 master weights with AdamW's two moments, and the largest layer gathered with
its gradient; ZeRO-2's is `estimate_zero2_model_states_mem_needs` (`stage_1_and_2.py`: 16-bit weights whole,
then 2 + 4 + 4 + 8 bytes partitioned). One device with float32 master weights is accelerate's "float32" training estimate
(`accelerate estimate-memory`: model, gradients and two AdamW moments, 16 bytes a parameter). Pure bfloat16
(`master_weights: bfloat16`) halves weights and gradients and keeps the moments in bfloat16 (2+2+4 bytes).
With LoRA, the frozen base is weights only (in its dtype, sharded under FSDP/ZeRO-3) and the adapters follow the
table in float32. A DPO reference model adds its weights (none with LoRA: the disabled adapter is the reference).

Activations are an estimate for transformer decoders with sdpa/flash attention (no seq^2 term), in the compute
dtype (2 bytes): per token and layer about 8h + 4q + 4kv + 5i values stored for the backward pass (h hidden,
q/kv attention widths, i MLP width), after the accounting of Korthikanti et al. 2022 ("Reducing activation
recomputation in large transformer models"). With activation checkpointing each layer keeps its input (h values)
and one layer at a time is recomputed. TRL 1.16 scores tokens with a fused LM head (`trl/kernels/chunked_logprob.py`)
that never holds the full logits: its hidden states in float32 and one 4096 x 32768 float32 tile. DPO runs chosen
and rejected together, so a micro-batch of B pairs is 2B sequences. Figures leave out the CUDA context and the
allocator's fragmentation (about 1 GB more in practice).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GB = 1024**3
_LM_HEAD_TILE = 4096 * 32768 * 4  # TRL 1.16's fused LM head: TOKEN_CHUNK_SIZE x vocabulary chunk, float32
KINDS = ("single", "ddp", "fsdp", "zero1", "zero2", "zero3")


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs of a model: parameter counts and the sizes activations scale with."""

    parameters: int
    largest_layer: int  # parameters of the largest single module (DeepSpeed's and accelerate's "largest layer")
    hidden_size: int
    num_layers: int
    intermediate_size: int
    attention_width: int  # num_heads x head_dim
    kv_width: int  # num_key_value_heads x head_dim
    vocab_size: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelShape:
        """Count the parameters of a decoder-only transformer (Llama, Gemma, Mistral, Qwen2 and their kin) from its
        config.json: embedding, per layer the attention and gated-MLP projections and norms, final norm, and an
        untied LM head. Multimodal configs are read through their `text_config`."""
        config = config.get("text_config") or config
        h = int(config["hidden_size"])
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or h // heads)
        i = int(config.get("intermediate_size") or 4 * h)
        vocab = int(config["vocab_size"])
        model_type = str(config.get("model_type", ""))
        q, kv = heads * head_dim, kv_heads * head_dim
        attention = h * q + 2 * h * kv + q * h
        if config.get("attention_bias") or model_type.startswith("qwen2"):
            attention += q + 2 * kv + (h if config.get("attention_bias") else 0)
        mlp = 3 * h * i + (2 * i + h if config.get("mlp_bias") else 0)
        norms = 4 * h if model_type.startswith(("gemma2", "gemma3")) else 2 * h
        if model_type.startswith(("gemma3", "qwen3", "olmo2")):
            norms += 2 * head_dim  # q_norm and k_norm
        embedding = vocab * h
        tied = config.get("tie_word_embeddings", True)
        total = embedding + layers * (attention + mlp + norms) + h + (0 if tied else embedding)
        return cls(total, max(embedding, attention + mlp + norms), h, layers, i, q, kv, vocab)

    def lora_parameters(self, rank: int, targets: list[str] | str | None) -> int:
        """Trainable parameters of LoRA adapters of rank `rank` on the named projections of every layer (PEFT's
        default for Llama/Gemma-style models, q_proj and v_proj, when `targets` is None; "all-linear": all seven)."""
        h, q, kv, i = self.hidden_size, self.attention_width, self.kv_width, self.intermediate_size
        shapes = {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }
        if targets is None:
            names = ["q_proj", "v_proj"]
        elif targets == "all-linear":
            names = list(shapes)
        else:
            names = [targets] if isinstance(targets, str) else list(targets)
        per_layer = sum(rank * (shapes[n][0] + shapes[n][1]) for n in names if n in shapes)
        return per_layer * self.num_layers


@dataclass(frozen=True)
class Launch:
    kind: str = "single"  # one of KINDS
    processes: int = 1


@dataclass(frozen=True)
class TrainSettings:
    sequences: int  # sequences per device per forward (DPO: 2 x per_device_train_batch_size)
    max_length: int
    activation_checkpointing: bool = False
    lora_parameters: int = 0  # trainable adapter parameters; 0 trains every parameter
    base_bytes: float = 2  # bytes per frozen base weight with LoRA (bfloat16: 2, float32: 4, 4-bit: about 0.5)
    master_weights: str = "float32"  # "bfloat16": pure bfloat16 weights and AdamW states
    reference_model: bool = False  # a DPO reference model beside the policy
    reference_bytes: int = 2


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device."""

    weights: int
    gradients: int
    optimizer: int
    working: int  # gathered parameters (FSDP/ZeRO-3)
    reference: int
    activations: int
    activations_checkpointed: int  # the same step with activation checkpointing on
    activations_full: int  # ... and off

    @property
    def model_states(self) -> int:
        """Weights, gradients, optimizer states and gathered layers: what DeepSpeed's estimator counts."""
        return self.weights + self.gradients + self.optimizer + self.working

    @property
    def total(self) -> int:
        return self.model_states + self.reference + self.activations


def plan_memory(shape: ModelShape, launch: Launch, settings: TrainSettings) -> MemoryPlan:
    """Per-device bytes of one training step (see the module docstring for every term)."""
    if launch.kind not in KINDS:
        raise ValueError(f"unknown launch kind {launch.kind!r}; one of {', '.join(KINDS)}")
    n = max(launch.processes, 1)
    lora = settings.lora_parameters > 0
    trainable = settings.lora_parameters if lora else shape.parameters
    frozen = shape.parameters if lora else 0
    pure_bf16 = settings.master_weights == "bfloat16"
    kind = launch.kind if n > 1 or launch.kind != "ddp" else "single"
    shard_weights = kind in ("fsdp", "zero3")

    if pure_bf16:
        weight_bytes, grad_bytes, optimizer_bytes = 2, 2, 4
    elif kind.startswith("zero"):
        weight_bytes, grad_bytes, optimizer_bytes = 2, 4, 12
    else:
        weight_bytes, grad_bytes, optimizer_bytes = 4, 4, 8
    weights = weight_bytes * trainable / (n if shard_weights else 1)
    weights += settings.base_bytes * frozen / (n if shard_weights else 1)
    if kind == "zero1":
        gradients = 2 * trainable + 4 * trainable / n  # 16-bit gradients, float32 partition for the optimizer
    elif kind == "zero2":
        gradients = 6 * trainable / n
    elif kind in ("zero3", "fsdp"):
        gradients = grad_bytes * trainable / n
    else:
        gradients = grad_bytes * trainable * (2 if kind == "ddp" else 1)
    optimizer = optimizer_bytes * trainable / (n if kind != "single" and kind != "ddp" else 1)
    working = 4 * shape.largest_layer if shard_weights else 0
    reference = 0
    if settings.reference_model and not lora:
        reference = settings.reference_bytes * shape.parameters / (n if shard_weights else 1)
    full, checkpointed = _activations(shape, settings)
    activations = checkpointed if settings.activation_checkpointing else full
    return MemoryPlan(
        int(weights),
        int(gradients),
        int(optimizer),
        int(working),
        int(reference),
        int(activations),
        int(checkpointed),
        int(full),
    )


def _activations(shape: ModelShape, settings: TrainSettings) -> tuple[float, float]:
    """(without, with) activation checkpointing: bytes kept for the backward pass of one micro-batch."""
    tokens = settings.sequences * settings.max_length
    h, q, kv, i = shape.hidden_size, shape.attention_width, shape.kv_width, shape.intermediate_size
    per_layer = 2 * tokens * (8 * h + 4 * q + 4 * kv + 5 * i)
    lm_head = 4 * tokens * h + _LM_HEAD_TILE
    full = shape.num_layers * per_layer + lm_head
    checkpointed = shape.num_layers * 2 * tokens * h + per_layer + lm_head
    return full, checkpointed


def gigabytes(value: int) -> str:
    return f"{value / GB:.1f} GB"


def describe(plan: MemoryPlan) -> str:
    """One line: the terms and their total, per device."""
    parts = [
        f"weights {gigabytes(plan.weights)}",
        f"gradients {gigabytes(plan.gradients)}",
        f"optimizer {gigabytes(plan.optimizer)}",
    ]
    if plan.working:
        parts.append(f"gathered layers {gigabytes(plan.working)}")
    if plan.reference:
        parts.append(f"reference {gigabytes(plan.reference)}")
    parts.append(f"activations ~{gigabytes(plan.activations)}")
    return f"{gigabytes(plan.total)} per device: " + ", ".join(parts)
