"""What `make demo`, the tests and the benchmarks run on without the Hugging Face Hub.

- `tiny`: a tiny random-weight Gemma-architecture model with a ChatML tokenizer trained on the spot
  (`python -m discopop_cli.demo.tiny OUT_DIR`).

May import: core.
"""
