"""Training: `discopop sft` and `discopop align`, each reading top to bottom (recipe, model, data, trainer,
train, save), and what they share.

- `sft`, `align`: the two commands.
- `injection`: how the loss registry gets behind `loss_type` (the loss plan, the recorder, the checks).
- `discopop_trainer`: the DPOTrainer subclass itself (imports TRL).
- `shared`: tokenizer and model loading, the closing report, the files written beside a model.
- `summary`: the `--dry-run` table and the model card's hyperparameter lines.
- `chat_tokens`: chat-template tokens the vocabulary lacks, added before training.
- `run_directory`: checkpoints, `--resume`, `--force` and the final model moved in when complete.
- `guard`: stops a run whose loss or gradient norm turns non-finite.
- `launch`: re-running a command under `accelerate launch` (DDP, FSDP, DeepSpeed ZeRO-3).
- `cli`: the Typer definitions of `discopop sft` and `discopop align`, which take the same arguments.

May import: recipes, data, losses, core.
"""
