"""User losses that break the contract (one finite float loss per pair, with a gradient reaching the policy
log-probabilities): refused at plan time, `--dry-run` included, in one line naming the loss; nothing loads."""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from bad_input import ALIGN, Case, align_files, case, check_case_ids, check_refused, forbid_loading

from discopop_cli import losses
from discopop_cli.core.errors import UserError
from discopop_cli.losses.user import check_loss_contract

HEAD = (
    "import torch\n\n\ndef loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, "
    "reference_rejected_logps, *, beta):\n    d = (policy_chosen_logps - policy_rejected_logps) - "
    "(reference_chosen_logps - reference_rejected_logps)\n"
)


def user_loss(module: str, body: str, *, dry_run: bool = False, **changes: object) -> tuple[list[str], dict]:
    """Args and files of an align run whose loss_type is `module:loss`, the function ending in `body`."""
    files = {**align_files(loss_type=f"{module}:loss", **changes), f"{module}.py": HEAD + textwrap.indent(body, "    ")}
    return [*ALIGN, *(["--dry-run"] if dry_run else [])], files


def loss_case(id: str, body: str, message: str, *, dry_run: bool = False, code: int = 2, **changes: object):
    module = "ul_" + id.replace("-", "_")
    args, files = user_loss(module, body, dry_run=dry_run, **changes)
    return case(id, args, files, code, message.replace("NAME", f"{module}:loss"))


WHERE = "loss `NAME` on a test batch of 4 pairs"

CASES = [
    loss_case(
        "align-user-loss-raises",
        "raise ValueError('tau must be set')\n",
        f"{WHERE} raised ValueError: tau must be set; fix the function (--debug shows the traceback)",
    ),
    loss_case(
        "align-user-loss-raises-in-dry-run",
        "return d.nonexistent()\n",
        f"{WHERE} raised AttributeError: 'Tensor' object has no attribute 'nonexistent'",
        dry_run=True,
    ),
    loss_case(
        "align-user-loss-wrong-shape",
        "return -torch.nn.functional.logsigmoid(beta * d).unsqueeze(1)\n",
        f"{WHERE} returned shape [4, 1]; return one loss per pair, shape [4]",
    ),
    loss_case(
        "align-user-loss-scalar",
        "return -torch.nn.functional.logsigmoid(beta * d).mean()\n",
        f"{WHERE} returned a scalar (shape []); return one loss per pair, shape [4] (the trainer averages them; "
        "drop a final .mean() or .sum())",
    ),
    loss_case(
        "align-user-loss-scalar-in-dry-run",
        "return -torch.nn.functional.logsigmoid(beta * d).sum()\n",
        f"{WHERE} returned a scalar (shape [])",
        dry_run=True,
    ),
    loss_case(
        "align-user-loss-detached",
        "return -torch.nn.functional.logsigmoid(beta * d).detach()\n",
        f"{WHERE} returned a tensor with no gradient (detached, or built from .item() or numpy)",
    ),
    loss_case(
        "align-user-loss-from-item",
        "return torch.tensor([float(x) for x in (beta * d).tolist()])\n",
        f"{WHERE} returned a tensor with no gradient",
    ),
    loss_case(
        "align-user-loss-ignores-the-policy",
        "return policy_chosen_logps * 0.0 + reference_chosen_logps\n",
        f"{WHERE}: no gradient reaches policy_chosen_logps or policy_rejected_logps",
    ),
    loss_case("align-user-loss-nan", "return d * float('nan')\n", f"{WHERE} returned non-finite values [nan, nan"),
    loss_case("align-user-loss-a-float", "return float(d.mean())\n", f"{WHERE} returned float, not a tensor"),
    loss_case("align-user-loss-integers", "return (d > 0).long()\n", f"{WHERE} returned a torch.int64 tensor"),
    loss_case(
        "align-user-loss-infinite-gradient",
        "return torch.sqrt(d - d)\n",
        f"{WHERE}: its gradient is not finite",
    ),
    case(
        "align-user-loss-paper-form-reads-a-missing-attribute",
        ALIGN,
        {
            **align_files(loss_type="ul_paper_form:loss"),
            "ul_paper_form.py": "def loss(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, "
            "reference_rejected_logps):\n    return policy_chosen_logps * self.gamma\n",
        },
        2,
        "loss `ul_paper_form:loss` on a test batch of 4 pairs raised AttributeError: 'types.SimpleNamespace' object "
        "has no attribute 'gamma'",
    ),
]


def test_there_are_enough_cases() -> None:
    check_case_ids(CASES, ("align",))


@pytest.mark.parametrize("bad", CASES)
def test_bad_user_loss(bad: Case, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_loading(monkeypatch)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # importing the loss must not write __pycache__
    # the case's folder holds the loss module: importable once it exists, as with PYTHONPATH=.
    bad = dataclasses.replace(bad, build=lambda folder: monkeypatch.syspath_prepend(str(folder)))
    before = set(sys.modules)
    try:
        check_refused(bad, tmp_path, tiny_model_dir, monkeypatch)
    finally:
        for name in set(sys.modules) - before:
            if name.startswith("ul_"):
                del sys.modules[name]


def test_debug_shows_the_loss_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--debug lets the user's own exception through, chained under the one-line error."""
    from bad_input import prepare, runner

    from discopop_cli.cli import app

    args, files = user_loss("ul_debugged", "raise KeyError('beta2')\n")
    prepare(tmp_path, files, tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    try:
        result = runner.invoke(app, ["--debug", *[a.replace("{tmp}", str(tmp_path)) for a in args]])
    finally:
        sys.modules.pop("ul_debugged", None)
        import discopop_cli.cli as cli

        cli._debug = False
    assert isinstance(result.exception, UserError)
    assert isinstance(result.exception.__cause__, KeyError)
    assert "loss `ul_debugged:loss` on a test batch of 4 pairs raised KeyError: 'beta2'" in str(result.exception)


@pytest.mark.parametrize("spec", losses.list_losses(), ids=lambda spec: spec.name)
def test_every_registered_loss_keeps_the_contract(spec: losses.LossSpec) -> None:
    check_loss_contract(spec.name, spec.fn, beta=0.05, params=dict(spec.params))


def test_the_contract_sees_the_shape_the_trainer_would_average() -> None:
    def per_batch(pc, pr, rc, rr, *, beta):  # noqa: ANN001, ANN202
        return (pc - pr).mean(dim=0, keepdim=True)

    with pytest.raises(UserError, match=r"returned shape \[1\]"):
        check_loss_contract("per_batch", per_batch, beta=0.1, params={})
    # and a well-formed one with the same arithmetic passes
    check_loss_contract(
        "per_pair", lambda pc, pr, rc, rr, *, beta: torch.sigmoid(beta * (pc - pr)), beta=0.1, params={}
    )
