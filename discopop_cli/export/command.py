"""`discopop export MODEL_DIR --gguf`: check everything, convert, write the Modelfile (and NOTICE), verify.

Every input is validated before a byte is written: the architecture, the quant type and what it needs, the
tokenizer, the chat template's translation and the destination. The GGUF is written under a temporary name beside
its destination and renamed when complete, so an interrupted export never leaves a half-written file behind.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from discopop_cli.core.console import notice, out, warn
from discopop_cli.core.errors import UserError
from discopop_cli.core.faults import disk_space
from discopop_cli.core.json_files import read_json
from discopop_cli.core.locks import output_lock
from discopop_cli.core.outputs import check_apart, staged_file, staging_name
from discopop_cli.export import chat_template, modelfile
from discopop_cli.export.architectures import architecture_of
from discopop_cli.export.quants import QuantType, quant_type, require_llama_cpp
from discopop_cli.export.vocab import CONTROL, Vocabulary, load_vocabulary


@dataclass(frozen=True)
class Companion:
    """A text file written beside the GGUF."""

    path: Path
    text: str


def default_gguf_path(model_dir: Path, name: str, quant: QuantType) -> Path:
    """Beside the model: MODEL_DIR-gguf/NAME-QUANT.gguf, a folder that holds the Modelfile and NOTICE too."""
    model_dir = model_dir if model_dir.name else model_dir.resolve()  # "." has no name of its own
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"  # an Ollama name may hold "/" or ":"
    return model_dir.parent / f"{model_dir.name}-gguf" / f"{stem}-{quant.label}.gguf"


def _resolve_output(output: Path | None, model_dir: Path, name: str, quant: QuantType) -> Path:
    if output is None:
        return default_gguf_path(model_dir, name, quant)
    if output.is_dir():
        return output / default_gguf_path(model_dir, name, quant).name
    if output.suffix.lower() != ".gguf":
        default = default_gguf_path(model_dir, name, quant)
        # A folder not made yet can hold the file; an existing file (a model's own weights, say) cannot.
        example = default if output.exists() else output / default.name
        raise UserError(
            f"--output {output} is neither an existing directory nor a .gguf file; name the file, e.g. {example}"
        )
    return output


def _read_config(model_dir: Path) -> dict[str, Any]:
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise UserError(
            f"{model_dir} is not a Hugging Face model directory (no config.json); pass the folder of a saved model"
        )
    config = read_json(config_file, "model")
    if "text_config" in config and "hidden_size" not in config:
        raise UserError(f"{model_dir} is a multimodal model; discopop export --gguf converts text-only causal LMs")
    return config


def _special_token_strings(model_dir: Path) -> dict[str, str]:
    """bos_token, eos_token, ... as the chat template sees them."""
    strings: dict[str, str] = {}
    for file_name in ("special_tokens_map.json", "tokenizer_config.json"):
        for key, value in read_json(model_dir / file_name, "model", missing_ok=True).items():
            text = value.get("content") if isinstance(value, dict) else value
            if key.endswith("_token") and isinstance(text, str):
                strings[key] = text
    return strings


@dataclass(frozen=True)
class ChatSetup:
    """What the chat template gives the Modelfile: its Go template, stops, default system text and notes."""

    template: str | None
    stops: list[str]
    system: str | None
    notes: tuple[str, ...] = ()


def _chat_setup(model_dir: Path, vocabulary: Vocabulary, system: str | None) -> ChatSetup:
    """The chat template translated; sets the vocabulary's end-of-turn id from it.

    A template with no Go translation costs the Modelfile its TEMPLATE (Ollama then reads the GGUF's own), never
    the GGUF: the export goes on with a warning naming the reason.
    """
    if vocabulary.chat_template is None:
        if system:
            raise UserError(f"{model_dir} has no chat template, so --system has no turn to go in; drop --system")
        notice(f"{model_dir} has no chat template: the Modelfile sends prompts to the model verbatim")
        return ChatSetup("{{ .Prompt }}", [], None)
    special_tokens = _special_token_strings(model_dir)
    try:
        fmt = chat_template.read_chat_format(vocabulary.chat_template, special_tokens)
    except chat_template.NotTranslatable as exc:
        warn(
            f"the chat template of {model_dir} has no Ollama translation ({exc}); "
            "the Modelfile is written without TEMPLATE, so Ollama uses the GGUF's own chat template"
        )
        return ChatSetup(None, [], system, ("The chat template has no Go translation: Ollama reads the GGUF's.",))
    if system and not fmt.has_system:
        raise UserError(f"the chat template of {model_dir} has no system turn; drop --system")
    # Control tokens only: user-defined ones are text (Gemma types "\n" and runs of spaces so) and occur in answers.
    specials = {token for token, kind in zip(vocabulary.tokens, vocabulary.token_types, strict=True) if kind == CONTROL}
    bos_text = special_tokens.get("bos_token")
    # llama.cpp adds bos itself when add_bos is set, so the Go template must not write it a second time.
    drop_head = vocabulary.add_bos and bool(fmt.head) and fmt.head == (bos_text or "")
    end_of_turn = chat_template.end_of_turn_token(fmt, specials)
    end_of_turn_id = vocabulary.token_id(end_of_turn) if end_of_turn else None
    if end_of_turn_id is not None:
        # llama.cpp then ends generation at the turn's end (e.g. <|im_end|>), not only at eos.
        vocabulary.special_ids["eot"] = end_of_turn_id
    stops, notes = [], list(fmt.notes)
    for stop in chat_template.stop_strings(fmt, specials, bos_text):
        try:
            modelfile.parameter_value(stop)
            stops.append(stop)
        except ValueError:
            notes.append(f"The stop {stop!r} is left out: a Modelfile cannot hold it on one line.")
    return ChatSetup(
        chat_template.go_template(fmt, drop_head=drop_head), stops, system or fmt.default_system, tuple(notes)
    )


def _modelfile_name(quant: QuantType, several: bool) -> str:
    """`Modelfile`; with several quants in one folder, one per quant: `Modelfile.Q8_0`."""
    return f"Modelfile.{quant.label}" if several else "Modelfile"


def _companions(
    model_dir: Path,
    gguf_paths: dict[QuantType, Path],
    vocabulary: Vocabulary,
    *,
    model_name: str,
    gemma: bool,
    system: str | None,
) -> list[Companion]:
    """A Modelfile per GGUF, then the LICENSE (the text itself) and, for Gemma, the NOTICE."""
    directory = next(iter(gguf_paths.values())).parent
    chat = _chat_setup(model_dir, vocabulary, system)
    license_text = modelfile.license_text(model_dir, gemma)
    files = []
    for quant, gguf_path in gguf_paths.items():
        spec = modelfile.ModelfileSpec(
            gguf_file_name=gguf_path.name,
            model_name=model_name,
            template=chat.template,
            stops=chat.stops,
            parameters=modelfile.seed_parameters(gemma, chat.stops),
            system=chat.system,
            license_text=license_text,
            notes=chat.notes,
            file_name=_modelfile_name(quant, len(gguf_paths) > 1),
        )
        files.append(Companion(directory / spec.file_name, modelfile.render_modelfile(spec)))
    if license_text:
        files.append(Companion(directory / "LICENSE", license_text + "\n"))
    if gemma:
        files.append(Companion(directory / "NOTICE", modelfile.gemma_notice(model_name)))
    return files


_PHI3_TOKENS = ("</s>", "<unk>", "<s>", "<|endoftext|>")


def _check_phi3_name(model_name: str, vocabulary: Vocabulary) -> None:
    """llama.cpp applies Phi-3's token rules to any model whose name holds "phi3" or "phi-3", and fails to load
    one whose vocabulary lacks Phi-3's tokens."""
    lowered = model_name.lower()
    if "phi3" in lowered or "phi-3" in lowered:
        missing = [token for token in _PHI3_TOKENS if vocabulary.token_id(token) is None]
        if missing:
            raise UserError(
                f"llama.cpp treats a model named {model_name!r} as Phi-3 and needs its tokens {', '.join(missing)}, "
                "which this vocabulary lacks; pass a --name without phi3 in it"
            )


def _check_destinations(gguf_path: Path, companions: list[Companion], force: bool) -> None:
    from discopop_cli.core.outputs import check_destination

    if gguf_path.is_dir():
        raise UserError(f"output file {gguf_path} is a directory; pass a .gguf file path to --output")
    check_destination(gguf_path, force=force, what="output file")
    for companion in companions:
        # Rewriting a file with the very same content replaces nothing, so it needs no --force.
        same = companion.path.is_file() and companion.path.read_text(encoding="utf-8") == companion.text
        if not same:
            check_destination(companion.path, force=force, what=companion.path.name)


def _check_all_destinations(gguf_paths: dict[QuantType, Path], companions: list[Companion], force: bool) -> None:
    for gguf_path in gguf_paths.values():
        _check_destinations(gguf_path, [], force)
    _check_destinations(next(iter(gguf_paths.values())), companions, force)


def _planned_bytes(arch: Any, config: dict[str, Any], sources: dict[str, Any], quants: list[QuantType]) -> int:
    """What the GGUFs take as planned (metadata aside), and the k-quants' intermediate beside them meanwhile."""
    from discopop_cli.export import convert

    needed = sum(tensor.nbytes() for spec in quants for tensor in convert.plan(arch, config, sources, spec))
    k_quant = next((spec for spec in quants if spec.needs_llama_cpp), None)
    if k_quant is not None:
        planned = convert.plan(arch, config, sources, k_quant)
        needed += sum(math.prod(t.shape) * (4 if t.source.dtype == "F32" else 2) for t in planned)
    return needed


def _write_text(path: Path, text: str) -> None:
    with staged_file(path) as partial:
        partial.write_text(text, encoding="utf-8")


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _quants(text: str) -> list[QuantType]:
    """`--quant q4_k_m,q8_0`: each type once, in the order given."""
    found: list[QuantType] = []
    for name in (part for part in text.split(",") if part.strip()):
        quant = quant_type(name)
        if quant not in found:
            found.append(quant)
    if not found:
        raise UserError("--quant is empty; name a type, e.g. --quant q4_k_m (or several: --quant q4_k_m,q8_0)")
    return found


def _gguf_paths(
    output: Path | None, model_dir: Path, model_name: str, quants: list[QuantType]
) -> dict[QuantType, Path]:
    if len(quants) > 1 and output is not None and not output.is_dir():
        raise UserError(
            f"--output {output} names one file, but {len(quants)} quant types make {len(quants)} files; "
            "pass a directory (or leave --output out)"
        )
    return {quant: _resolve_output(output, model_dir, model_name, quant) for quant in quants}


def run_export(
    model_dir: Path,
    *,
    gguf: bool,
    quant: str,
    output: Path | None,
    name: str | None,
    system: str | None,
    verify: bool,
    force: bool,
) -> None:
    from discopop_cli.export import convert
    from discopop_cli.export.progress import ExportProgress
    from discopop_cli.export.tensors import read_safetensors

    if not gguf:
        raise UserError("choose an export format: --gguf (the only one so far)")
    started = time.perf_counter()
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError(f"model directory {model_dir} does not exist; pass the folder of a saved model")
    config = _read_config(model_dir)
    arch = architecture_of(config, model_dir)
    quants = _quants(quant)
    k_quants = [spec for spec in quants if spec.needs_llama_cpp]
    if k_quants:
        require_llama_cpp(f"--quant {k_quants[0].name} (a k-quant made by llama.cpp's quantizer)")
    if verify:
        require_llama_cpp("--verify")
    model_name = name or model_dir.resolve().name
    gemma = arch.model_type.startswith("gemma")

    vocabulary = load_vocabulary(model_dir, config, gemma=gemma)
    _check_phi3_name(model_name, vocabulary)
    gguf_paths = _gguf_paths(output, model_dir, model_name, quants)
    for gguf_path in gguf_paths.values():
        check_apart(gguf_path, [("model", model_dir)], "--output")
    companions = _companions(model_dir, gguf_paths, vocabulary, model_name=model_name, gemma=gemma, system=system)
    _check_all_destinations(gguf_paths, companions, force)
    sources = read_safetensors(model_dir)

    common = {"arch": arch, "config": config, "vocabulary": vocabulary, "model_name": model_name, "gemma": gemma}
    # The k-quants all come from one lossless intermediate, converted once; numpy types are written directly.
    first_path = gguf_paths[quants[0]]
    intermediate = staging_name(first_path, "intermediate")
    needed = _planned_bytes(arch, config, sources, quants)
    # One export at a time into a folder: it writes the folder's Modelfile, LICENSE and NOTICE.
    with (
        output_lock(first_path.parent / "Modelfile", "export", whole_folder=True),
        disk_space(first_path.parent, needed, "the GGUF"),
    ):
        _check_all_destinations(gguf_paths, companions, force)  # again, holding the lock
        try:
            with ExportProgress(quantizing=bool(k_quants)) as progress:
                if k_quants:
                    planned = convert.plan(arch, config, sources, k_quants[0])
                    file_type = convert.intermediate_file_type(planned)
                    convert.write_gguf(
                        intermediate, planned=planned, file_type=file_type, advance=progress.advance, **common
                    )
                for spec in quants:
                    with staged_file(gguf_paths[spec]) as partial:
                        if spec.needs_llama_cpp:
                            convert.quantize_with_llama_cpp(intermediate, partial, spec, progress.advance)
                        else:
                            planned = convert.plan(arch, config, sources, spec)
                            convert.write_gguf(
                                partial, planned=planned, file_type=spec.file_type, advance=progress.advance, **common
                            )
        finally:
            intermediate.unlink(missing_ok=True)
        for companion in companions:
            _write_text(companion.path, companion.text)

    took = f" in {time.perf_counter() - started:.1f} s"
    for spec, gguf_path in gguf_paths.items():
        size = _human_size(gguf_path.stat().st_size)
        line = f"exported: {gguf_path} ({spec.label}, {size})" + (took if spec == quants[-1] else "")
        out.print(line, highlight=False, soft_wrap=True)
    first_modelfile = first_path.parent / _modelfile_name(quants[0], len(quants) > 1)
    others = " (Modelfile.TYPE for each of the others)" if len(quants) > 1 else ""
    notice(f"run it in Ollama: ollama create {model_name} -f {first_modelfile}{others}")

    if verify:
        from discopop_cli.export.verify import verify_exports

        verify_exports(model_dir, gguf_paths)
