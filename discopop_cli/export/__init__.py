"""`discopop export --gguf`: the project's own Hugging Face → GGUF converter, built on the `gguf` package.

Modules, in the order an export uses them:

- `quants`: the `--quant` names, which ones numpy makes and which need llama.cpp's quantizer.
- `architectures`: per-architecture hyperparameters and tensor transforms (gemma, llama, mistral, qwen2).
- `tensors`: safetensors read a slab of rows at a time, converted and written in chunks.
- `vocab`: tokenizer metadata (SentencePiece-style `llama` and byte-level BPE `gpt2` vocabularies).
- `chat_template/`: the Jinja chat template read as a chat format (turn wrappers, where the system message goes,
  a default system message) and written as Ollama's Go template.
- `modelfile`: the Modelfile and, for Gemma derivatives, the NOTICE.
- `verify`: llama.cpp against transformers on chat prompts.
- `command`: the `export` command itself.
- `convert`: the GGUF file written (numpy quantization, or llama.cpp's for k-quants).
- `quantize_child`: llama.cpp's quantizer in a child process, so Ctrl-C stops it.
- `cli`: the Typer definition of `discopop export`.
- `progress`: the export's progress bar.

May import: core.
"""
