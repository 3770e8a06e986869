"""The README.md of a merged model: what was merged into what, with which scaling, stored how."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import yaml

from discopop_cli.core.model_card import GEMMA_NOTICE, framework_versions
from discopop_cli.core.yaml_text import YamlRefused, load_yaml_text

if TYPE_CHECKING:
    import torch

    from discopop_cli.merge.inputs import Adapter
    from discopop_cli.merge.plan import MergePlan


def render_merge_card(
    *,
    model_name: str,
    base: str,
    adapter: Adapter,
    plan: MergePlan,
    out_dtype: torch.dtype | None,
    stored_dtypes: list[str],
    model_type: str,
) -> str:
    cfg = adapter.config
    adapter_front, adapter_body = _split_card(adapter.folder / "README.md")
    is_gemma = model_type.startswith("gemma")
    front: dict[str, Any] = {
        "base_model": base,
        "library_name": "transformers",
        "tags": list(dict.fromkeys(["discopop-cli", "lora", "merged-lora", *(adapter_front.get("tags") or [])])),
    }
    if adapter_front.get("datasets"):
        front["datasets"] = adapter_front["datasets"]
    if is_gemma:
        front["license"] = "gemma"
    dtype = (
        f"{str(out_dtype).removeprefix('torch.')} (the weights were merged in float32, then cast)"
        if out_dtype is not None
        else f"as stored in the base ({', '.join(stored_dtypes)}); merged in float32"
    )
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {model_name}", ""]
    lines += [
        f"This model is {base} with the LoRA adapter `{adapter.folder}` merged into its weights by `discopop merge`: "
        "every targeted weight W became W + scale * B @ A. It loads with transformers alone; peft is not needed.",
        "",
        "## What was merged",
        "",
        f"- base model: {base}",
        f"- adapter: `{adapter.folder}` (peft {cfg.get('peft_version', 'unknown version')})",
        *_scaling_lines(plan, bool(cfg.get("use_rslora"))),
        f"- targeted modules: {_targets(plan)}",
        f"- DoRA: {'yes, each merged row rescaled to its learnt magnitude' if cfg.get('use_dora') else 'no'}",
        f"- fan_in_fan_out: {bool(cfg.get('fan_in_fan_out'))}",
    ]
    if plan.replaced:
        lines.append(
            f"- tensors replaced by the adapter's own (modules_to_save, embeddings): {', '.join(plan.replaced)}"
        )
    if plan.vocab_resized:
        lines.append(f"- vocabulary resized from {plan.vocab_resized[0]} to {plan.vocab_resized[1]} tokens")
    if plan.untied:
        lines.append(f"- embeddings untied (the adapter changes one side only): {', '.join(plan.untied)} written")
    lines += [f"- dtype: {dtype}", ""]
    training = _training_sections(adapter_body)
    if training.strip():
        lines += ["## How the adapter was trained (from its card)", "", *_demote(training).strip().splitlines(), ""]
    lines += ["## Framework versions", ""]
    lines += [f"- {name} {version}" for name, version in framework_versions()]
    if is_gemma:
        lines += ["", "## License", "", f"{GEMMA_NOTICE}."]
    return "\n".join(lines) + "\n"


def _scaling_lines(plan: MergePlan, rslora: bool) -> list[str]:
    formula = "lora_alpha / sqrt(r) (rsLoRA)" if rslora else "lora_alpha / r"
    groups = Counter((d.r, d.alpha, d.scale) for d in plan.deltas)
    if not groups:
        return ["- LoRA weights: none (the adapter only replaces tensors)"]
    if len(groups) == 1:
        r, alpha, scale = next(iter(groups))
        return [f"- r: {r}", f"- lora_alpha: {alpha:g}", f"- scaling: {formula} = {scale:g}"]
    lines = [f"- scaling: {formula}, per module (rank_pattern / alpha_pattern):"]
    for (r, alpha, scale), count in sorted(groups.items()):
        lines.append(f"  - r={r}, lora_alpha={alpha:g}: scaling {scale:g} ({count} weights)")
    return lines


def _targets(plan: MergePlan) -> str:
    """Leaf module names with how many weights each, e.g. `q_proj` (2), `v_proj` (2) - 4 weights."""
    counts = Counter(d.module.rsplit(".", 1)[-1] for d in plan.deltas)
    if not counts:
        return "none"
    listed = ", ".join(f"{name} ({count})" for name, count in sorted(counts.items()))
    return f"{listed}; {len(plan.deltas)} weights in all"


def _split_card(path: Any) -> tuple[dict[str, Any], str]:
    """An existing card's YAML front matter and body (both empty when there is no card)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}, ""
    if text.startswith("---\n"):
        head, sep, body = text[4:].partition("\n---\n")
        if sep:
            try:
                front = load_yaml_text(head) or {}
            except (yaml.YAMLError, YamlRefused):  # an alias bomb in a downloaded adapter's card is no front matter
                front = {}
            return (front if isinstance(front, dict) else {}), body
    return {}, text


def _training_sections(body: str) -> str:
    """The adapter card without its title and the sections ours repeats (framework versions, license)."""
    kept: list[str] = []
    keep = True
    for line in body.splitlines():
        if line.startswith("# "):
            continue
        if line.startswith("## "):
            keep = line[3:].strip().lower() not in ("framework versions", "license")
        if keep:
            kept.append(line)
    return "\n".join(kept)


def _demote(markdown: str) -> str:
    """Headings one level down, so the adapter's card nests under ours (code blocks left alone)."""
    lines, in_code = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        lines.append(f"#{line}" if line.startswith("#") and not in_code else line)
    return "\n".join(lines)
