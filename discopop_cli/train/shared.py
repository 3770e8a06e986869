"""What `discopop align` and `discopop sft` share once a recipe is validated.

Loading the tokenizer and the model options, the files written beside a trained model, and the closing one-line
report. Where the run's files go is run_directory's concern.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from discopop_cli.core.console import is_main_rank, notice, out, warn
from discopop_cli.core.errors import UserError, first_line


def eval_enabled(config: Any) -> bool:
    return str(config.eval_strategy) not in ("no", "IntervalStrategy.NO")


def quiet_library_deprecations() -> None:
    """TRL calls transformers' gradient_checkpointing_* aliases; their deprecation notes are not the user's to fix.

    Under `accelerate launch`, ranks other than 0 also keep their progress bars to themselves: one copy of the
    run's output is enough.
    """
    warnings.filterwarnings("ignore", message=r".*deprecated and will be removed in v6", category=FutureWarning)
    if not is_main_rank():
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()


def plan_the_run(recipe: Any, launch: Any, processes: int) -> Any:
    """The precision plan applied to the recipe and the memory plan sized (run_plan.py), then on a CPU the float32
    fallback. With a GPU here, a plan that does not fit it is said before anything loads."""
    from discopop_cli.core.devices import accelerator_available, tell_deepspeed_when_cpu_only
    from discopop_cli.recipes.load import check_no_accelerator
    from discopop_cli.train.launch import LaunchOptions, launch_kind
    from discopop_cli.train.precision import SHARDED
    from discopop_cli.train.run_plan import check_fits, plan_run

    kind = launch_kind(launch or LaunchOptions())
    # FSDP and ZeRO run on GPUs only: on a machine without one, a dry run plans them for the GPUs they will have.
    run = plan_run(recipe, kind, processes, accelerator=accelerator_available() or kind in SHARDED)
    if check_no_accelerator(recipe):
        tell_deepspeed_when_cpu_only()
    if run.precision.notice:
        notice(f"{recipe.path.name}: {run.precision.notice}")
    advice = check_fits(run)
    if advice:
        warn(advice)
    return run


def show_dry_run(
    recipe: Any,
    config: Any,
    destination: Path,
    *,
    force: bool,
    resume: bool,
    processes: int,
    loss_plan: Any = None,
    run: Any = None,
) -> None:
    """The resolved recipe as a table, and whether a real run could write its output."""
    from discopop_cli.train.run_directory import check_run_directory
    from discopop_cli.train.summary import print_recipe_table

    print_recipe_table(recipe, config, loss_plan, processes=processes, run=run)
    try:
        resume_from = check_run_directory(destination, force=force, resume=resume)
    except UserError as exc:
        notice(f"a real run would stop here: {exc}")
    else:
        if resume_from is not None:
            notice(f"a real run would continue from {resume_from}")


def load_tokenizer(recipe: Any, model_args: Any, config: Any) -> Any:
    """The recipe's tokenizer (`tokenizer_name_or_path`, else the model's), with the recipe's chat template."""
    from transformers import AutoTokenizer

    name = recipe.extras.get("tokenizer_name_or_path") or model_args.model_name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            name, revision=model_args.model_revision, trust_remote_code=config.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise UserError(f"could not load the tokenizer of {name}: {first_line(exc)}") from None
    if recipe.extras.get("chat_template"):
        tokenizer.chat_template = recipe.extras["chat_template"]
    if not tokenizer.chat_template:
        notice(f"{name} has no chat template; conversational data needs one (set chat_template in the recipe)")
    return tokenizer


def model_init_kwargs(model_args: Any, config: Any) -> dict[str, Any]:
    """`from_pretrained` options from ModelConfig, then the recipe's own `model_init_kwargs` on top."""
    kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": config.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        "use_safetensors": True,  # safe by default: never unpickle weights
    }
    kwargs.update(config.model_init_kwargs or {})
    return {k: v for k, v in kwargs.items() if v is not None}


def reference_model(model_args: Any, config: Any, precision: Any) -> Any:
    """The DPO reference model, when the precision plan keeps it in another dtype than the policy (float32 master
    weights on one device or DDP: the reference has no optimizer, so it stays in bfloat16, as under ZeRO-3);
    None lets TRL build it like the policy, or use LoRA's disabled adapter."""
    if model_args.use_peft or precision.reference_dtype in (None, precision.load_dtype):
        return None
    from trl.trainer.utils import create_model_from_path

    kwargs = {**(config.model_init_kwargs or {}), "dtype": precision.reference_dtype}
    if config.distributed_state.distributed_type in ("MULTI_GPU", "DEEPSPEED"):
        kwargs["device_map"] = None  # as TRL loads it: one copy per process
    with model_loading(model_args.model_name_or_path):
        return create_model_from_path(model_args.model_name_or_path, **kwargs)


def decontaminate(recipe: Any, task: str, train_dataset: Any, eval_dataset: Any) -> tuple[Any, Any]:
    """The recipe's `decontaminate_humaneval`: rows quoting HumanEval removed from train and eval data, counted."""
    source = recipe.extras.get("decontaminate_humaneval")
    if not source:
        return train_dataset, eval_dataset
    from discopop_cli.data import decontaminate as humaneval

    strings = humaneval.filter_strings(humaneval.load_problems(source))
    rows = len(train_dataset)
    train_dataset, removed = humaneval.decontaminate(train_dataset, strings, task)
    eval_dataset, eval_removed = humaneval.decontaminate(eval_dataset, strings, task)
    if not len(train_dataset):
        raise UserError(f"decontaminate_humaneval removed all {rows} training rows: every one quotes HumanEval")
    notice(
        f"decontamination: {removed} of {rows} training row(s) quote HumanEval ({humaneval.humaneval_source(source)}) "
        f"and were removed" + (f", and {eval_removed} eval row(s)" if eval_removed else "")
    )
    return train_dataset, eval_dataset


def check_model_config(model_args: Any, config: Any) -> None:
    """Read the model's config.json (no weights) so an unreadable or unknown one is refused before any loading."""
    from transformers import AutoConfig

    name = model_args.model_name_or_path
    try:
        AutoConfig.from_pretrained(name, revision=model_args.model_revision, trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"could not read the model config of {name}: {first_line(exc)}") from None


def output_bytes(model_args: Any) -> int | None:
    """About what the trained model takes on disk: the local model's weights; None for an adapter or a Hub id."""
    folder = Path(str(model_args.model_name_or_path)).expanduser()
    if model_args.use_peft or not folder.is_dir():
        return None
    return sum(path.stat().st_size for path in folder.glob("*.safetensors")) or None


@contextlib.contextmanager
def model_loading(name: str) -> Iterator[None]:
    """A model folder that passed the early checks but cannot be read is one line naming it, not a traceback."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, SafetensorError) as exc:
        raise UserError(f"could not load the model {name}: {first_line(exc)}") from None


def _raised_in_template(exc: BaseException) -> bool:
    """Whether `exc` was raised by a Jinja template as it rendered (a `raise_exception`, a division by zero)."""
    import jinja2

    if isinstance(exc, jinja2.TemplateError):
        return True
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":  # jinja2's name for a template compiled from a string
            return True
        tb = tb.tb_next
    return False


@contextlib.contextmanager
def chat_template_faults(recipe: Any, model_name: str) -> Iterator[None]:
    """A chat template that fails on the data (TRL renders it while preparing the datasets) is one line naming the
    template and its message, not a traceback."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        if not _raised_in_template(exc):
            raise
        source = (
            "the recipe's chat_template" if recipe.extras.get("chat_template") else f"the chat template of {model_name}"
        )
        raise UserError(
            f"{source} failed on the training data: {first_line(exc)} ({type(exc).__name__}); fix the template "
            "or the rows it refuses"
        ) from None


def check_quantization(model_args: Any) -> None:
    """QLoRA's 4-bit (and 8-bit) loading is bitsandbytes on a CUDA GPU; say so before any model is loaded."""
    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        return
    import importlib.util

    import torch

    bits = "load_in_4bit" if model_args.load_in_4bit else "load_in_8bit"
    if not torch.cuda.is_available():
        raise UserError(f"{bits} needs a CUDA GPU (bitsandbytes); remove it from the recipe to train unquantized here")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(f"{bits} needs bitsandbytes; run: pip install bitsandbytes")


def trainer_class(base: type) -> type:
    """TRL's `base` trainer as discopop runs it: with the non-finite guard, the lean LM head, and without TRL's
    mid-run card.

    TRL writes a README.md into output_dir at every checkpoint; in a run directory that would look like a finished
    model. discopop writes its own card once, when the model it describes is complete.
    """
    from discopop_cli.train.guard import guarded

    class RunTrainer(guarded(base)):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            lean = self.use_lean_heads()
            self.tied_gradient_in_place = lean and self.use_tied_gradient()

        def use_tied_gradient(self) -> bool:
            """The tied embedding's two gradients added into `.grad` in place (lean_head.accumulate_tied_gradient):
            one process on a CPU, where the lean head (on the policy: checked by the caller) computes the LM head's
            gradient."""
            from discopop_cli.train.lean_head import accumulate_tied_gradient
            from discopop_cli.train.speed import enabled

            if not enabled("tied-gradient") or self.accelerator.num_processes > 1:
                return False
            if self.accelerator.device.type != "cpu" or self.is_deepspeed_enabled or self.is_fsdp_enabled:
                return False
            return accumulate_tied_gradient(self.transformers_model(self.model))

        def training_step(self, *args: Any, **kwargs: Any) -> Any:
            if not self.tied_gradient_in_place:
                return super().training_step(*args, **kwargs)
            from discopop_cli.train.lean_head import head_gradient_into_grad

            with head_gradient_into_grad():
                return super().training_step(*args, **kwargs)

        def use_lean_heads(self) -> bool:
            """The lean LM head (lean_head.py) on the policy and the reference, once TRL has patched them; True
            where the policy has it."""
            from discopop_cli.train.lean_head import use_lean_head
            from discopop_cli.train.speed import enabled

            if not enabled("lean-head"):
                return False
            reference = getattr(self, "ref_model", None)
            if reference is not None:
                use_lean_head(self.transformers_model(reference))
            return use_lean_head(self.transformers_model(self.model))

        def transformers_model(self, model: Any) -> Any:
            """The transformers model inside accelerate's wrapper and PEFT's."""
            model = self.accelerator.unwrap_model(model)
            return model.get_base_model() if hasattr(model, "get_base_model") else model

        def create_model_card(self, *args: Any, **kwargs: Any) -> None:
            return None

    RunTrainer.__name__ = RunTrainer.__qualname__ = base.__name__
    return RunTrainer


def save_model(trainer: Any, folder: Path) -> None:
    """Model (safetensors) and tokenizer with its template. Called on every rank: under FSDP and ZeRO-3 the
    weights are gathered collectively; transformers writes from rank 0 only."""
    trainer.save_model(str(folder))
    if trainer.accelerator.is_main_process:
        # Trainer pickles its arguments; recipe.yaml says the same in a form that is safe to open.
        (folder / "training_args.bin").unlink(missing_ok=True)
        # A PEFT adapter is saved without the generation config that carries the end-of-turn stop token;
        # keep it beside the adapter so `discopop merge` can carry it into the merged model.
        generation_config = getattr(trainer.model, "generation_config", None)
        if generation_config is not None and not (folder / "generation_config.json").exists():
            generation_config.save_pretrained(str(folder))


def write_outputs(trainer: Any, recipe: Any, folder: Path, card: str) -> None:
    """trainer_state.json, the resolved recipe and the card, beside the saved model (rank 0 only)."""
    from discopop_cli.recipes import load as recipes

    trainer.state.save_to_json(str(folder / "trainer_state.json"))
    resolved = {**recipe.model, **recipe.training, **recipe.extras, "dataset_mixture": recipe.data.as_dict()}
    resolved["output_dir"] = recipe.training.get("output_dir")
    (folder / "recipe.yaml").write_text(recipes.dump_resolved(resolved), encoding="utf-8")
    (folder / "README.md").write_text(card, encoding="utf-8")


def is_gemma(model: Any) -> bool:
    return str(getattr(model.config, "model_type", "")).startswith("gemma")


def report(
    trainer: Any,
    destination: Path,
    seconds: float,
    *,
    verb: str,
    metrics: list[tuple[str, str]],
    from_first: bool = False,
) -> None:
    """'VERB: DIR (N steps in S s, last loss L, ...)' with the named metrics of the last logged training step.

    `from_first` shows the loss as 'loss FIRST -> LAST', which is what tells a fine-tuning run worked.
    """
    history = [e for e in trainer.state.log_history if "loss" in e]
    last = history[-1] if history else {}
    parts = [f"{trainer.state.global_step} steps in {seconds:.0f} s"]
    if from_first and len(history) > 1:
        parts.append(f"loss {history[0]['loss']:.4f} -> {last['loss']:.4f}")
    elif "loss" in last:
        parts.append(f"last loss {last['loss']:.4f}")
    parts += [f"{label} {last[key]:.4f}" for key, label in metrics if key in last]
    out.print(f"[green]{verb}:[/] {destination} ({', '.join(parts)})", highlight=False, soft_wrap=True)
