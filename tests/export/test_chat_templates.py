"""Chat templates to Ollama Go templates, checked in Go against transformers' `apply_chat_template`.

The corpus is the 70 real chat templates llama.cpp tests itself with (from the llama-cpp-python sdist). Each one
that translates is rendered by Go's text/template the way Ollama's chat endpoint renders it and by transformers,
on chats with and without a system message, of one and of three user turns, and the texts must be identical.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from go_render import build_renderer, go_render
from llama_cpp_sdist import chat_templates

from discopop_cli.export import chat_template

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
USER, ASSISTANT = "user", "assistant"


def _chat(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


THREE_TURNS = (
    (USER, "Hello! Who are you?"),
    (ASSISTANT, "I am a helpful assistant."),
    (USER, "What is 7 plus 5?"),
    (ASSISTANT, "7 plus 5 is 12."),
    (USER, "And 9 minus 4?\nJust the number, please."),
)
CHATS = [_chat(THREE_TURNS[0]), _chat(*THREE_TURNS)]
SYSTEM_CHATS = [_chat(("system", "Answer briefly."), *chat) for chat in (THREE_TURNS[:1], THREE_TURNS)]


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_renderer(tmp_path_factory.mktemp("go"))


@pytest.fixture(scope="module")
def tokenizer():
    """A tiny fast tokenizer: apply_chat_template only needs its special tokens and the template."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS.values())}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")), **SPECIAL_TOKENS
    )


def compare_in_go(sources: dict[str, str], tokenizer, renderer: Path) -> tuple[list[str], dict[str, str]]:
    """(names that render identically, name -> why not) for the templates given."""
    items, expected, refused = [], {}, {}
    for name, source in sources.items():
        try:
            fmt = chat_template.read_chat_format(source, SPECIAL_TOKENS)
        except chat_template.NotTranslatable as exc:
            refused[name] = f"not translated: {exc}"
            continue
        chats = CHATS + (SYSTEM_CHATS if fmt.has_system else [])
        tokenizer.chat_template = source
        expected[name] = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
        items.append(
            {
                "name": name,
                "template": chat_template.go_template(fmt),
                "system": fmt.default_system or "",
                "chats": chats,
            }
        )
    identical = []
    for item, rendered in zip(items, go_render(renderer, items), strict=True):
        name = item["name"]
        if isinstance(rendered, dict):
            refused[name] = f"Go: {rendered['error']}"
        elif rendered != expected[name]:
            first = next(i for i, (a, b) in enumerate(zip(rendered, expected[name], strict=True)) if a != b)
            refused[name] = f"chat {first} differs: Go {rendered[first]!r} vs transformers {expected[name][first]!r}"
        else:
            identical.append(name)
    return identical, refused


def test_llama_cpp_chat_templates_render_identically_in_go(tokenizer, renderer: Path, capsys) -> None:
    sources = chat_templates()
    assert len(sources) == 70
    identical, refused = compare_in_go(sources, tokenizer, renderer)
    with capsys.disabled():
        print(
            f"\nchat templates: {len(identical)} of {len(sources)} translate and render identically in Go and transformers"
        )
        for name, why in refused.items():
            print(f"  {name}: {why[:160]}")
    assert len(identical) >= 60, refused
