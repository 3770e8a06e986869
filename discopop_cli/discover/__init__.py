"""`discopop discover`: the paper's loss-discovery loop, made safe to run on code an LLM (or anyone) wrote.

A proposer offers a candidate loss as Python source; it is checked before anything runs it, then probed in a
locked-down child process, then trained with the recipe and scored, and every outcome is one line of the
append-only archive that the next prompt is built from.

- `candidate`: a proposed loss: its source, thought, hash, and the formula shown for it.
- `static`: the AST allow-list (torch/math operations only) checked before any code runs.
- `sandbox`, `probe`: the child process with resource limits and an audit hook, and the property checks it runs.
- `proposers`, `prompt`: `dir:PATH` and `openai:MODEL@URL`, and the prompt the latter is sent.
- `archive`: `DIR/archive.jsonl`, one line per candidate, and what `--resume` reads back from it.
- `fitness`: how a trained candidate is scored (the one place to switch to `eval prefs`).
- `loop`: the generations, from proposal to archive line.
- `report`, `export`: the leaderboard and plot, and the best candidate as a loss plugin package.
- `cli`: the Typer definitions of `discopop discover` (run, report, export).

May import: train, recipes, data, losses, core.
"""
