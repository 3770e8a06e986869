"""The prompt an LLM proposer is sent, in the paper's shape: the task, the loss signature, the archive so far
(code and fitness, best first), and a request for a thought and one new function, as JSON."""

from __future__ import annotations

from typing import Any

SIGNATURE = (
    "def NAME(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *, beta)"
)
EXAMPLE = """import torch
import torch.nn.functional as F


def dpo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *, beta):
    margin = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * margin)
"""
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "thought": {"type": "string"},
        "name": {"type": "string"},
        "code": {"type": "string"},
    },
    "required": ["thought", "name", "code"],
}
# How many archive entries go back into the prompt: the best scored ones, then the latest refusals.
SHOWN_SCORED = 8
SHOWN_REJECTED = 4


def system_prompt(fitness_label: str) -> str:
    return f"""You are a machine-learning researcher searching for new offline preference-optimisation objectives \
for aligning a language model, in the family of DPO.

Each objective is one Python function with this signature:

{SIGNATURE}

Its four arguments are float tensors of shape [B]: the summed log-probabilities that the policy being trained \
and the frozen reference model give to the chosen and to the rejected response of B preference pairs. `beta` is \
a positive float. The function returns one loss per pair, a tensor of shape [B]; training minimises their mean, \
so the loss must fall as the policy prefers the chosen response more than the reference does. It must stay \
finite, with finite gradients, for margins far from zero.

Write plain tensor arithmetic with torch, torch.nn.functional (imported as F) and math only: no other imports, \
no loops, no printing, no files. Here is the format, with DPO's logistic loss:

{EXAMPLE}
Each objective you propose is trained into a model and scored by {fitness_label} (higher is better). Answer \
with a JSON object with three keys: "thought" (your reasoning: what you try next and why, given the results so \
far), "name" (a short snake_case name) and "code" (the complete Python source, imports included)."""


def user_prompt(entries: list[dict[str, Any]]) -> str:
    scored = sorted(
        (e for e in entries if e.get("status") == "scored"),
        key=lambda e: (e.get("fitness") or 0.0, e.get("metrics", {}).get("reward_margin") or 0.0),
        reverse=True,
    )[:SHOWN_SCORED]
    refused = [e for e in entries if e.get("status") != "scored"][-SHOWN_REJECTED:]
    if not scored and not refused:
        return "Nothing has been evaluated yet. Propose the first objective: something other than plain DPO."
    parts = []
    if scored:
        parts.append("Objectives evaluated so far, best first:")
        for entry in scored:
            parts.append(
                f"\n# {entry.get('name') or entry['id']}: fitness {entry['fitness']:.4f}\n{entry['code'].strip()}\n"
            )
    if refused:
        parts.append("\nRecent proposals that were refused or failed (do not repeat their mistakes):")
        for entry in refused:
            parts.append(f"- {entry.get('name') or entry['id']}: {entry.get('reason', '')}")
    parts.append("\nPropose one new objective that differs from all of the above.")
    return "\n".join(parts)
