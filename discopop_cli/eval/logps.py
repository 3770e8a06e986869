"""Sequence log-probabilities of the chosen and rejected completions, one model at a time, batch by batch.

The batches are TRL's own (`DataCollatorForPreference`: chosen rows then rejected rows, right-padded, truncated
at `max_length`), and each model runs through TRL's fused LM head (`add_fused_lm_head`), the kernel
`DPOTrainer` scores with. The log-probs are therefore TRL's to the last bit on the same device, batch size and
dtype, without materialising the logits over the vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from discopop_cli.core.errors import UserError, first_line

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class PairLogps:
    """Per pair: summed log-probs of the chosen and rejected completions (float32 tensors of shape [pairs])."""

    chosen: Any
    rejected: Any


def make_batches(examples: list[dict], tokenizer: Any, *, batch_size: int, max_length: int | None) -> list[dict]:
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise UserError("the tokenizer has neither a pad nor an eos token; set pad_token in its tokenizer_config.json")
    collate = DataCollatorForPreference(pad_token_id=pad, max_length=max_length, truncation_mode="keep_start")
    return [collate(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size)]


def completion_tokens(batches: list[dict]) -> tuple[Any, Any]:
    """Scored tokens per pair (after truncation): the completion positions TRL sums over."""
    import torch

    chosen, rejected = [], []
    for batch in batches:
        counts = batch["completion_mask"][:, 1:].sum(dim=1)
        c, r = counts.chunk(2)
        chosen.append(c)
        rejected.append(r)
    return torch.cat(chosen), torch.cat(rejected)


def resolve_dtype(name: str) -> Any:
    import torch

    if name not in DTYPES:
        raise UserError(f"--dtype {name!r} is not one of {', '.join(DTYPES)}")
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, name)


def device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(name: str, dtype: Any) -> Any:
    """A causal LM for scoring: safetensors only, no remote code; a LoRA adapter folder is merged into its base."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    from discopop_cli.train.shared import quiet_library_deprecations

    quiet_library_deprecations()
    kwargs = {"dtype": dtype, "use_safetensors": True, "trust_remote_code": False}
    try:
        adapter = Path(name) / "adapter_config.json"
        if adapter.is_file():
            from peft import PeftConfig, PeftModel

            base = AutoModelForCausalLM.from_pretrained(
                PeftConfig.from_pretrained(name).base_model_name_or_path, **kwargs
            )
            model = PeftModel.from_pretrained(base, name).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except (OSError, ValueError, SafetensorError) as exc:
        raise UserError(f"could not load the model {name}: {first_line(exc)}") from None
    return model.to(device()).eval()


def score(model: Any, batches: list[dict], advance: Callable[[], None] | None = None) -> PairLogps:
    """Summed completion log-probs per pair, for every batch, as DPOTrainer computes them."""
    import torch
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model)
    target = next(model.parameters()).device
    chosen, rejected = [], []
    with torch.no_grad():
        for batch in batches:
            ids = batch["input_ids"].to(target)
            mask = batch["completion_mask"].to(target)
            labels = ids.masked_fill(mask == 0, -100)
            out = model(
                input_ids=ids,
                attention_mask=batch["attention_mask"].to(target),
                labels=labels,
                use_cache=False,
                fused_lm_head=True,
            )
            logps = out.log_probs[:, -(mask.size(1) - 1) :].sum(dim=1).float().cpu()
            c, r = logps.chunk(2)
            chosen.append(c)
            rejected.append(r)
            if advance is not None:
                advance()
    return PairLogps(torch.cat(chosen), torch.cat(rejected))
