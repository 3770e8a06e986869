"""Evaluating trained models: `discopop eval judge` (win rates and MT-Bench-style grades from an LLM judge).

- `judge/`: answers for a prompt set, a pairwise or single-answer LLM judge over them, and the statistics
  (bootstrap intervals, a length-controlled win rate, per-category tables, a bar chart).

May import: train, recipes, data, losses, core.
"""
