"""The model page's family through the exporter: google/gemma-3-270m with its real 262,144-token vocabulary.

One converted model per test session (`gemma3_dir` in conftest.py; `make install` installs the package). Gemma's
vocabulary types "\\n", "\\n\\n" and runs of spaces as user-defined tokens: the Modelfile must still stop only at the
turn markers, and carry the Gemma Terms of Use themselves. The base has no chat template, so `--verify` measures it
on plain text; the thresholds accept its F16 export and refuse a quant whose greedy continuations all differ.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from go_render import build_renderer, go_render
from llama_cpp_sdist import chat_templates
from typer.testing import CliRunner

from discopop_cli.cli import app
from discopop_cli.export.modelfile import GEMMA_NOTICE, gemma_terms_of_use
from discopop_cli.export.quants import quant_type
from discopop_cli.export.verify import TIE_MARGIN, measure, verify_exports

runner = CliRunner()
GEMMA_TEMPLATE = "google-gemma-2-2b-it"  # Gemma's turn format (<start_of_turn>role\n...<end_of_turn>\n), as Gemma 3's
BROKEN_QUANT = "q2_k"  # on this base every greedy continuation differs from transformers' (docs/commands/export.md)


@pytest.fixture(scope="module")
def gemma_chat_dir(gemma3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base with Gemma's own chat template: the small files copied, the weights linked."""
    folder = tmp_path_factory.mktemp("gemma3-chat") / "gemma-3-270m-chat"
    folder.mkdir()
    for path in gemma3_dir.iterdir():
        if path.suffix == ".safetensors":
            (folder / path.name).symlink_to(path)
        else:
            shutil.copy(path, folder / path.name)
    (folder / "chat_template.jinja").write_text(chat_templates()[GEMMA_TEMPLATE], encoding="utf-8")
    return folder


def _export(*args: str | Path) -> str:
    result = runner.invoke(app, ["export", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def test_modelfile_stops_at_turn_markers_and_carries_the_terms(gemma_chat_dir: Path, tmp_path: Path) -> None:
    _export(gemma_chat_dir, "--gguf", "--quant", "f16", "-o", tmp_path, "--name", "gemma-3-270m-chat")
    modelfile = (tmp_path / "Modelfile").read_text(encoding="utf-8")
    stops = re.findall(r'^PARAMETER stop "(.*)"$', modelfile, re.M)
    assert stops == ["<start_of_turn>", "<end_of_turn>"]  # the turn markers; "\n" and "\n\n" are text
    assert all(stop.strip() for stop in stops) and modelfile.count("PARAMETER stop") == 2
    terms = gemma_terms_of_use()
    assert f'LICENSE """{terms}"""\n' in modelfile
    assert (tmp_path / "LICENSE").read_text(encoding="utf-8") == terms + "\n"
    assert "3.1 Distribution and Redistribution" in terms and "You must provide all third party recipients" in terms
    assert (tmp_path / "NOTICE").read_text(encoding="utf-8").splitlines()[0] == GEMMA_NOTICE

    # The TEMPLATE, rendered by Go's text/template as Ollama renders it, equals transformers' rendering (less the
    # <bos> the template writes: llama.cpp adds it from the GGUF's add_bos_token).
    from transformers import AutoTokenizer

    template = re.search(r'^TEMPLATE """(.*?)"""$', modelfile, re.M | re.S).group(1)
    tokenizer = AutoTokenizer.from_pretrained(gemma_chat_dir)
    turns = [
        ("user", "Hello! Who are you?"),
        ("assistant", "I am a helpful assistant.\n\nAsk me anything."),
        ("user", "What is 7 plus 5?"),
        ("assistant", "7 plus 5 is 12."),
        ("user", "And 9 minus 4?\nJust the number,  please."),
    ]
    chats = [[{"role": role, "content": text} for role, text in turns[:count]] for count in (1, 3, 5)]
    expected = [tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) for chat in chats]
    (tmp_path / "go").mkdir()
    renderer = build_renderer(tmp_path / "go")
    rendered = go_render(renderer, [{"template": template, "system": "", "chats": chats}])[0]
    assert ["<bos>" + text for text in rendered] == expected


@pytest.fixture(scope="module")
def base_reports(gemma3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("gemma3-base-gguf")
    _export(gemma3_dir, "--gguf", "--quant", f"f16,{BROKEN_QUANT}", "-o", out, "--name", "gemma-3-270m")
    paths = {quant_type(name): out / f"gemma-3-270m-{name.upper()}.gguf" for name in ("f16", BROKEN_QUANT)}
    reports = verify_exports(gemma3_dir, paths)
    return {report.quant.name: report for report in reports}


def test_base_without_template_verifies_on_plain_text(base_reports: dict) -> None:
    f16 = base_reports["f16"]
    assert [check.label for check in f16.checks] == ["plain question", "plain prose", "plain code", "plain text"]
    assert all(check.ids_equal for check in f16.checks)  # llama.cpp's tokenizer from the GGUF: the same ids
    assert f16.passed, f16.problems()
    assert f16.mean_kl < 0.002 and f16.top1_agreement >= 0.995


def test_thresholds_accept_f16_and_refuse_a_quant_whose_greedy_all_differ(base_reports: dict) -> None:
    f16, broken = base_reports["f16"], base_reports[BROKEN_QUANT]
    # Positions whose reference top two are within TIE_MARGIN are not counted; any F16 top-1 flip is one of them.
    flips = sum(check.untied - check.top1_agreeing for check in f16.checks)
    assert flips == 0
    assert not any(check.greedy_equal for check in broken.checks)
    assert not broken.passed
    assert f"every greedy continuation differs ({len(broken.checks)} of {len(broken.checks)})" in broken.problems()


def test_a_flip_on_a_tie_is_not_counted() -> None:
    # The reference's top two 0.005 apart (as on the position that failed an F16 export of this base before).
    reference = np.array([[5.0, 4.995, 0.0], [1.0, 3.0, 0.0]], dtype=np.float32)
    exported = np.array([[4.99, 4.996, 0.0], [1.0, 3.0, 0.0]], dtype=np.float32)
    kl, agreeing, untied, agreeing_all = measure(reference, exported)
    assert (agreeing, untied, agreeing_all) == (1, 1, 1) and TIE_MARGIN > 0.005
    assert kl[1] == 0.0 and 0 < kl[0] < 1e-4
