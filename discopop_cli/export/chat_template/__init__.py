"""The model's Jinja chat template, read as a chat format and written as Ollama's Go template.

- `jinja_env`: the template rendered as transformers renders it.
- `probe`: the format read off renderings of probe chats, and checked.
- `format`: the format, its Go template, and Ollama's rendering of it in Python.
- `stops`: stop strings and the end-of-turn token the format implies.

May import: core.
"""

from discopop_cli.export.chat_template.format import ChatFormat, SystemSlot, go_template, render_like_ollama
from discopop_cli.export.chat_template.jinja_env import NotTranslatable
from discopop_cli.export.chat_template.probe import read_chat_format
from discopop_cli.export.chat_template.stops import end_of_turn_token, stop_strings

__all__ = [
    "ChatFormat",
    "NotTranslatable",
    "SystemSlot",
    "end_of_turn_token",
    "go_template",
    "read_chat_format",
    "render_like_ollama",
    "stop_strings",
]
