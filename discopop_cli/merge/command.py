"""`discopop merge ADAPTER --output DIR`: fold a LoRA adapter into its base model, streaming.

peft's `merge_and_unload` needs the whole model in memory. Here the base's safetensors are read a block of rows at a
time, the targeted blocks get `scale * B @ A` added in float32, and each block is cast and appended to the output
file straight away (see safetensors_stream), so memory stays near one block plus the adapter. Everything is checked
(adapter, base, shapes, tokenizer, destination) before anything is written; the output is built beside its
destination and renamed into place when complete.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from discopop_cli.core.console import err, notice, out
from discopop_cli.core.errors import UserError, first_line
from discopop_cli.core.json_files import read_json

if TYPE_CHECKING:
    import torch

    from discopop_cli.merge.inputs import Adapter, BaseCheckpoint
    from discopop_cli.merge.plan import MergePlan, TensorPlan

DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16", "half": "float16"}
DTYPES |= {"float32": "float32", "fp32": "float32", "float": "float32"}
DEFAULT_MAX_SHARD_SIZE = "5GB"
# Rows per block are chosen so a block holds about this many elements (16 MiB in float32): measured on a
# 600 MB model, smaller blocks cost time (more reads and matmuls), bigger ones memory, for no speed gained.
BLOCK_ELEMENTS = 4 * 1024 * 1024
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
)
# Raw SentencePiece models: transformers does not always re-save them, but GGUF exporters read them.
SENTENCEPIECE_FILES = ("tokenizer.model", "spiece.model")
# What a Hub download of a base needs: weights, configs, tokenizer.
_HUB_PATTERNS = ["*.safetensors", "*.json", "*.jinja", "*.model", "*.txt"]


def run_merge(
    adapter_path: Path,
    *,
    output: Path,
    base: str | None,
    dtype: str | None,
    force: bool,
    max_shard_size: str = DEFAULT_MAX_SHARD_SIZE,
) -> None:
    from discopop_cli.core.faults import disk_space
    from discopop_cli.core.locks import claimed
    from discopop_cli.core.outputs import check_apart, check_destination, staged_dir
    from discopop_cli.merge.card import render_merge_card
    from discopop_cli.merge.inputs import check_same_architecture, read_adapter, read_base
    from discopop_cli.merge.plan import build_plan
    from discopop_cli.merge.safetensors_stream import parse_size

    started = time.monotonic()
    output = output.expanduser()
    check_apart(output, [("adapter", adapter_path), ("base model", _local_base(adapter_path, base))], "--output")
    check_destination(output, force=force, what="output")
    out_dtype = _output_dtype(dtype)
    try:
        max_shard_bytes = parse_size(max_shard_size)
    except ValueError as exc:
        raise UserError(f"--max-shard-size: {exc}") from None

    adapter = read_adapter(adapter_path.expanduser())
    base_name, base_dir = _base_of(adapter, base, output)
    checkpoint = read_base(base_dir)
    check_same_architecture(adapter, checkpoint, base_name)
    embeddings, tied = embedding_pair(checkpoint.config, base_dir)
    plan = build_plan(checkpoint, adapter, out_dtype=out_dtype, embeddings=embeddings, tied=tied, base_label=base_name)
    config = _merged_config(checkpoint.config, plan.config_updates)
    tokenizer_files = _tokenizer_files(adapter.folder, base_dir, _vocab_rows(config), base_name)
    needed = sum(p.dtype.itemsize * math.prod(p.shape) for p in plan.tensors)
    needed += sum(path.stat().st_size for path in tokenizer_files.values())

    with (
        claimed(output, "merge", force=force, what="output"),
        disk_space(output.parent, needed, "the merged model"),
        staged_dir(output, command="merge") as staging,
    ):
        files, total_bytes = _write_weights(plan, checkpoint, staging, max_shard_bytes)
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _copy_companions(staging, adapter.folder, base_dir, tokenizer_files)
        card = render_merge_card(
            model_name=output.name,
            base=base_name,
            adapter=adapter,
            plan=plan,
            out_dtype=out_dtype,
            stored_dtypes=_stored_dtypes(checkpoint),
            model_type=str(config.get("model_type", "")),
        )
        (staging / "README.md").write_text(card, encoding="utf-8")
    if not any(name in tokenizer_files for name in ("chat_template.jinja", "chat_template.json")) and not _has_template(
        output
    ):
        notice(f"{output} has no chat template (neither the adapter nor the base had one)")
    seconds = time.monotonic() - started
    from rich.markup import escape

    out.print(
        f"[green]merged:[/] {escape(f'{adapter.folder} into {base_name} -> {output}')} ({len(plan.deltas)} LoRA weights, "
        f"{len(plan.tensors)} tensors in {len(files)} file(s), {total_bytes / 1e6:,.1f} MB, "
        f"{_dtype_label(out_dtype, checkpoint)}, {seconds:.1f} s)",
        highlight=False,
        soft_wrap=True,
    )


def _base_of(adapter: Adapter, base: str | None, output: Path) -> tuple[str, Path]:
    """The base to merge into (--base, else the adapter's recorded one) and its local folder."""
    recorded = adapter.config.get("base_model_name_or_path")
    base_name = base or recorded
    if not base_name:
        raise UserError(f"{adapter.folder}/adapter_config.json names no base model; pass one with --base")
    if base and recorded and base != recorded:
        notice(f"merging into {base}, not the adapter's recorded base {recorded}")
    base_dir = resolve_model(base_name)
    from discopop_cli.core.outputs import check_apart

    check_apart(output, [("base model", base_dir)], "--output")
    return base_name, base_dir


def _local_base(adapter_path: Path, base: str | None) -> Path | None:
    """The base folder named by --base or the adapter's config, when it is a local one (for the early checks)."""
    config = adapter_path.expanduser() / "adapter_config.json"
    try:
        name = base or json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None  # read_adapter says what is wrong with it
    path = Path(str(name)).expanduser() if name else None
    return path if path is not None and path.is_dir() else None


def _copy_companions(staging: Path, adapter_dir: Path, base_dir: Path, tokenizer_files: dict[str, Path]) -> None:
    """The generation config and the tokenizer files beside the merged weights."""
    # The adapter's generation config wins: `discopop sft` may have made a new end-of-turn token the stop token.
    for source in (adapter_dir, base_dir):
        if (source / "generation_config.json").is_file():
            shutil.copyfile(source / "generation_config.json", staging / "generation_config.json")
            break
    for name, source in tokenizer_files.items():
        shutil.copyfile(source, staging / name)


def _output_dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    key = name.strip().lower().removeprefix("torch.")
    if key not in DTYPES:
        raise UserError(f"--dtype {name} is not one of bfloat16, float16, float32")
    import torch

    return getattr(torch, DTYPES[key])


def _stored_dtypes(checkpoint: BaseCheckpoint) -> list[str]:
    from discopop_cli.merge.safetensors_stream import torch_dtype

    names = {str(torch_dtype(dtype)).removeprefix("torch.") for _, dtype, _ in checkpoint.tensors.values()}
    return sorted(names)


def _dtype_label(out_dtype: torch.dtype | None, checkpoint: BaseCheckpoint) -> str:
    if out_dtype is not None:
        return str(out_dtype).removeprefix("torch.")
    return "dtypes as stored: " + "/".join(_stored_dtypes(checkpoint))


def resolve_model(name: str) -> Path:
    """A local model folder, or a Hub id fetched (or found in the cache when offline) with its safetensors only."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~")) and not path.exists()
    if not looks_like_hub_id:
        raise UserError(f"base model {name} not found: no such folder")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=_HUB_PATTERNS))
    except Exception as exc:  # noqa: BLE001 - any Hub failure means the same thing to the user
        raise UserError(
            f"base model {name} is neither a local folder nor available from the Hub: {first_line(exc)}"
        ) from None


def embedding_pair(config: dict[str, Any], folder: Path) -> tuple[dict[str, str], bool]:
    """The architecture's output -> input embedding names, and whether this base ties them."""
    import transformers

    pairs: dict[str, str] = {}
    for architecture in config.get("architectures") or []:
        keys = getattr(getattr(transformers, architecture, None), "_tied_weights_keys", None)
        if isinstance(keys, dict):
            pairs = {str(k): str(v) for k, v in keys.items()}
            break
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # config sanity warnings are about the base, not the merge
    try:
        loaded = transformers.AutoConfig.from_pretrained(folder)
        tied = bool(getattr(loaded.get_text_config(), "tie_word_embeddings", False))
    except Exception:  # noqa: BLE001 - unknown architectures: fall back to what config.json says
        text = config.get("text_config") or {}
        tied = bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))
    finally:
        transformers.logging.set_verbosity(verbosity)
    return pairs, tied


def _merged_config(config: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """The base's config.json with the merge's changes: dtype, vocabulary size, untied embeddings."""
    merged = json.loads(json.dumps(config))
    text = merged.get("text_config") if isinstance(merged.get("text_config"), dict) else None
    for key, value in updates.items():
        if key == "text_config.vocab_size" and text is not None:
            text["vocab_size"] = value
        elif key == "dtype":
            merged["dtype"] = value
            if "torch_dtype" in merged:
                merged["torch_dtype"] = value
            if text is not None and ("dtype" in text or "torch_dtype" in text):
                text["dtype" if "dtype" in text else "torch_dtype"] = value
        else:
            merged[key] = value
            if key == "tie_word_embeddings" and text is not None and key in text:
                text[key] = value
    return merged


def _vocab_rows(config: dict[str, Any]) -> int | None:
    return config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")


def _token_count(data: dict[str, Any]) -> int | None:
    """Ids a parsed tokenizer.json can produce (its vocabulary plus added tokens), without loading transformers."""
    vocab = (data.get("model") or {}).get("vocab")
    ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab or [])))
    ids += [token["id"] for token in data.get("added_tokens") or []]
    return max(ids) + 1 if ids else None


def _tokenizer_files(adapter_dir: Path, base_dir: Path, vocab_rows: int | None, base_name: str) -> dict[str, Path]:
    """The tokenizer to ship: the adapter's when it saved one (it may add tokens or a chat template), else the base's."""
    has_own = any((adapter_dir / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
    home = adapter_dir if has_own else base_dir
    files = {name: home / name for name in TOKENIZER_FILES if (home / name).is_file()}
    files |= {name: home / name for name in SENTENCEPIECE_FILES if (home / name).is_file()}
    # Copied as they are, so a damaged one would ship a model nothing can load: each is parsed here first.
    what = "adapter" if has_own else "base model"
    shipped = {name: read_json(path, what) for name, path in files.items() if name.endswith(".json")}
    tokens = _token_count(shipped.get("tokenizer.json", {}))
    if has_own and tokens is not None and tokens == _token_count(_base_tokenizer(base_dir)):
        # Same vocabulary as the base: its raw SentencePiece model still describes this tokenizer.
        for name in SENTENCEPIECE_FILES:
            if name not in files and (base_dir / name).is_file():
                files[name] = base_dir / name
    if tokens is not None and vocab_rows is not None and tokens > vocab_rows:
        raise UserError(
            f"the tokenizer in {home} has {tokens} tokens but the merged embeddings would have {vocab_rows} rows, "
            f"and the adapter carries no resized embeddings for {base_name}: the added tokens were never trained. "
            "Train with the embeddings in modules_to_save (or trainable_token_indices) to merge them."
        )
    return files


def _base_tokenizer(base_dir: Path) -> dict[str, Any]:
    """The base's tokenizer.json, only compared against: a damaged or missing one compares unequal."""
    try:
        return read_json(base_dir / "tokenizer.json", "base model", missing_ok=True)
    except UserError:
        return {}


def _has_template(folder: Path) -> bool:
    return "chat_template" in read_json(folder / "tokenizer_config.json", "model", missing_ok=True)


def _write_weights(plan: MergePlan, base: BaseCheckpoint, folder: Path, max_shard_bytes: int) -> tuple[list[str], int]:
    """Write every planned tensor into size-capped safetensors files (plus an index when there are several)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from safetensors import safe_open

    from discopop_cli.merge.safetensors_stream import (
        ShardWriter,
        TensorSpec,
        plan_shards,
        shard_file_names,
        write_index,
    )

    specs = [TensorSpec(p.name, p.dtype, p.shape) for p in plan.tensors]
    shards = plan_shards(specs, max_shard_bytes)
    names = shard_file_names(len(shards))
    by_name = {p.name: p for p in plan.tensors}
    weight_map: dict[str, str] = {}

    def read_rows(tensor: str, start: int | None, end: int | None) -> torch.Tensor:
        # safe_open maps the whole file and the pages a read touches count as this process's memory until the map
        # is closed, so a file is opened per block: the resident set holds one block, not the base.
        with safe_open(base.folder / base.tensors[tensor][0], framework="pt") as handle:
            if start is None:
                return handle.get_tensor(tensor)
            return handle.get_slice(tensor)[start:end]

    with ExitStack() as stack:
        progress = stack.enter_context(
            Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("tensors"),
                TimeElapsedColumn(),
                console=err,
            )
        )
        task = progress.add_task("merging", total=len(specs))
        for file_name, shard in zip(names, shards, strict=True):
            progress.update(task, description=f"merging into {file_name}")
            with ShardWriter(folder / file_name, shard) as writer:
                for spec in writer.specs:
                    for block in merged_blocks(by_name[spec.name], read_rows):
                        writer.write(spec.name, block)
                    weight_map[spec.name] = file_name
                    progress.advance(task)
    total = sum(spec.nbytes for spec in specs)
    if len(names) > 1:
        write_index(folder, weight_map, total)
    return names, total


def merged_blocks(
    tensor: TensorPlan, read_rows: Callable[[str, int | None, int | None], torch.Tensor]
) -> Iterator[torch.Tensor]:
    """The output tensor a block of rows at a time: source rows, the adapter's changes in float32, the output dtype."""
    import torch

    if not tensor.shape:
        whole = tensor.replacement if tensor.replacement is not None else read_rows(tensor.source, None, None)
        yield whole.to(tensor.dtype)
        return
    rows = tensor.shape[0]
    row_elements = 1
    for size in tensor.shape[1:]:
        row_elements *= size
    step = max(1, BLOCK_ELEMENTS // max(1, row_elements))
    for start in range(0, rows, step):
        end = min(rows, start + step)
        from_adapter = tensor.replacement is not None
        block = tensor.replacement[start:end] if from_adapter else read_rows(tensor.source, start, end)
        if tensor.token_rows is not None or tensor.addend is not None or tensor.delta is not None:
            # Changed in place below: a copy when the rows belong to the adapter (a tied twin may read them again).
            block = _apply_adapter(tensor, block.to(torch.float32, copy=from_adapter), start, end)
            if not bool(torch.isfinite(block).all()):
                raise UserError(f"merging the adapter into {tensor.name} gives inf or NaN; the adapter is broken")
        cast = block.to(tensor.dtype)
        # float16 holds at most 65504: a cast that turns finite weights into inf would ship a broken model.
        narrowed = cast.dtype != block.dtype and cast.is_floating_point()
        if narrowed and not bool(torch.isfinite(cast).all()) and bool(torch.isfinite(block).all()):
            raise UserError(f"{tensor.name} overflows {tensor.dtype}; choose --dtype bfloat16 or float32")
        yield cast


def _apply_adapter(tensor: TensorPlan, block: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """The adapter's changes to rows start:end of a tensor, in place on a float32 block."""
    if tensor.token_rows is not None:
        indices, values = tensor.token_rows
        inside = (indices >= start) & (indices < end)
        block[indices[inside] - start] = values[inside]
    if tensor.addend is not None:
        block.add_(tensor.addend[start:end])
    delta = tensor.delta
    if delta is not None:
        block.add_(delta.rows(start, end))
        if delta.dora_magnitude is not None:
            # DoRA: each row of W + scale * B @ A (an output feature) rescaled to its learnt magnitude.
            import torch

            norms = torch.linalg.norm(block, dim=1)
            block.mul_((delta.dora_magnitude[start:end] / norms).unsqueeze(1))
    return block
