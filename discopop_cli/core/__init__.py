"""The ground every other package stands on: nothing here knows about recipes, losses or models.

- `errors`: UserError (exit 2) and RunFailure (exit 1), the one-line messages the CLI prints.
- `console`: the stdout/stderr consoles, `notice` and `warn`, quiet on ranks other than 0; the final `error:` line.
- `outputs`: outputs kept apart from inputs, written under a temporary name and moved into place when complete;
  `--force` only on discopop's own output (its marker, or a file's signature).
- `locks`: one writer per output (a lock beside it), and the staging of dead runs cleared away.
- `weights`: the one safetensors reader, every header checked against its file.
- `faults`: a full disk and overlong messages as one line; exit 130 for Ctrl-C, 143 for SIGTERM.
- `yaml_text`: YAML without aliases, nesting bounded.
- `json_files`: reading a model's JSON files with a one-line error when one is damaged.
- `suggest`: "did you mean ...?" for misspelt names.
- `model_card`: README.md model cards, framework versions and the Gemma notice.
- `moved`: the module paths of earlier releases, still importable.
- `devices`: whether a GPU (or XPU, MPS) is here; DeepSpeed told when there is none.
- `llama`: llama.cpp models loaded quietly, a Ctrl-C during the load honoured.

May import: nothing else in discopop_cli.
"""
