"""Datasets: where a recipe's data comes from, and whether its rows are usable, checked before a model loads.

- `sources`: the recipe's dataset keys and mixtures parsed into specs, local files resolved, loading.
- `checks`: local files read before training: they exist, have rows, have the columns a command needs, and every
  row is usable (or, with --skip-bad-rows, is left out and reported).
- `rows`: what a usable row is, per format (pairs, conversations, prompt/completion, text), on plain dicts.

May import: core.
"""
