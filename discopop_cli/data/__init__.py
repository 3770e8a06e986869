"""Datasets: where a recipe's data comes from, and whether its rows are usable, checked before a model loads.

- `sources`: the recipe's dataset keys and mixtures parsed into specs, local files resolved, loading.
- `checks`: local files read before training: they exist, have rows, and have the columns a command needs.

May import: core.
"""
