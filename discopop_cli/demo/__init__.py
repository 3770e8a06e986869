"""What `make demo`, the tests and the benchmarks run on without the Hugging Face Hub.

- `tiny`: a tiny random-weight Gemma-architecture model with a ChatML tokenizer trained on the spot
  (`python -m discopop_cli.demo.tiny OUT_DIR`).
- `from_gguf`: the one GGUF -> transformers folder conversion (`gguf_to_transformers`), keeping the special and
  user-defined tokens, `model_max_length` and the end-of-generation ids; the demos, tests and benchmarks use it.
- `smollm2`, `gemma3`: the real models that packages ship as GGUFs (SmolLM2-135M-Instruct, google/gemma-3-270m),
  found or assembled, then converted (`python -m discopop_cli.demo.gemma3 OUT_DIR`).
- `concise`: the concise-vs-repetitive preference pairs of `make demo-real`.

May import: core.
"""
