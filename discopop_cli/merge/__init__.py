"""`discopop merge`: a LoRA adapter folded into its base model, streamed a block of rows at a time.

- `command`: the command, top to bottom (inputs, plan, write, card).
- `inputs`: the base checkpoint (headers only) and the adapter, read and vetted.
- `plan`: every output tensor worked out and checked before a byte is written.
- `safetensors_stream`: safetensors files written a block at a time.
- `card`: the merged model's README.md.
- `cli`: the Typer definition of `discopop merge`.

May import: core.
"""
