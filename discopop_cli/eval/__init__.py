"""Evaluation: `discopop eval ...`, measuring whether training made a model better.

- `prefs`: preference metrics on held-out pairs (`discopop eval prefs`): TRL's `rewards/*` against a reference
  model, and reference-free accuracies; `score_models` is the library entry point.
- `pairs`: the pairs to score (the loaders `align` uses) and their TRL tokenization.
- `logps`: batched log-probabilities of the chosen and rejected completions, model by model.
- `models`: the models to compare, checked before weights load, and their one shared tokenizer.
- `tasks`: benchmark tasks through lm-evaluation-harness (`discopop eval tasks`), a GGUF through llama.cpp.
- `gguf_lm`: lm-eval's gguf backend on llama-cpp-python's server, generation tasks only (and why).
- `results`: `eval_results.json` and the model card's `model-index`, kept beside the model, earlier results kept.
- `judge/`: answers for a prompt set, a pairwise or single-answer LLM judge over them, and the statistics
  (bootstrap intervals, a length-controlled win rate, per-category tables, a bar chart): `discopop eval judge`.
- `cli`: the Typer definitions of `discopop eval` (prefs, tasks, judge).

May import: train, recipes, data, losses, core.
"""
