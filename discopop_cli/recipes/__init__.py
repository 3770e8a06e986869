"""Alignment-handbook recipes: YAML in, a validated recipe out, before anything heavy loads.

- `load`: reading the YAML, `--set` overrides, the split into TRL's script/model/training arguments,
  and every check that can run without a model (keys, value types, ranges, paths).
- `types`: each recipe key's expected type, read from TRL's and transformers' dataclasses; secrets.
- `legacy`: the 2024 handbook recipes (`dataset_mixer`, `dataset_splits`) translated to today's keys.

May import: data, core.
"""
