"""`discopop chat`: talk to a model you made, a GGUF through llama.cpp or a model folder through transformers.

- `engines`: the two back ends, each streaming a reply to a list of messages with the model's own template and stops.
- `command`: one turn (`--prompt`) or an interactive session, streamed to the terminal.
- `cli`: the Typer definition.

May import: export, core.
"""
