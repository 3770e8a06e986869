"""`discopop eval judge`: answers from two or more models, an LLM judge over them, and honest statistics.

- `prompts`: the shipped MT-Bench-style prompt set and any JSONL file with a `prompt` field.
- `store`: the run folder, its settings and the append-only JSONL caches that make `--resume` lose nothing.
- `answers`: answer generation through transformers `generate` (a model folder) or llama.cpp (a GGUF file).
- `judges`: the judge clients (`openai:MODEL@URL` over HTTP, `gguf:PATH` in process) with retries.
- `verdicts`: the judge prompts and the parsing of their verdicts and ratings.
- `stats`: win rates, bootstrap intervals and the length-controlled win rate.
- `report`: the tables, the JSON document and the bar chart.
- `command`: the command itself, tying these together.
"""
