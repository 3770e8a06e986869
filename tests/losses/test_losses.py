"""The loss registry: each paper loss against a literal float64 transcription of its formula."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import math
import sys
import textwrap
import uuid

import pytest
import torch
import torch.nn.functional as F

from discopop_cli import losses
from discopop_cli.core.errors import UserError

TAU = 0.05
PAPER_LOSSES = ("discopop", "padll", "cell", "pfl", "aql", "aqfl", "dbaql")


# --- independent reference implementations, written literally from the formulas ------------------------


def _nll(x):
    return -F.logsigmoid(x)


def _hinge(x):
    return torch.relu(1 - x)


def _std(v):
    return v.std() if v.numel() > 1 else torch.zeros((), dtype=v.dtype)


def _var(v):
    return v.var() if v.numel() > 1 else torch.zeros((), dtype=v.dtype)


def ref_discopop(pc, pr, rc, rr, beta, tau=TAU):
    x = beta * ((pc - pr) - (rc - rr))
    m = torch.sigmoid(x / tau)
    return (1 - m) * _nll(x) + m * torch.exp(-x)


def ref_padll(pc, pr, rc, rr, beta, tau=TAU):
    d = (pc - pr) - (rc - rr)
    w = 0.9 * (1 - 0.5 * (d < 0).double())
    return w * _nll(beta * d)


def ref_cell(pc, pr, rc, rr, beta, tau=TAU):
    x = beta * ((pc - pr) - (rc - rr))
    return 0.5 * torch.exp(-x) + 0.5 * _nll(x)


def ref_pfl(pc, pr, rc, rr, beta, tau=TAU):
    x = beta * ((pc - pr) - (rc - rr))
    out = []
    for i in range(x.numel()):
        out.append(_nll(x[i]) / 2 if pc[i] > pr[i] else 2 * _hinge(x[i]))
    return torch.stack(out)


def ref_aql(pc, pr, rc, rr, beta, tau=TAU):
    x = beta * ((pc - pr) - (rc - rr))
    z = x / tau
    q = 0.5 + 0.01 * (torch.sigmoid(z.mean()) - 0.5)
    w = torch.sigmoid(-(z - q))
    return w * _nll(x) + (1 - w) * _hinge(x)


def ref_aqfl(pc, pr, rc, rr, beta, tau=TAU):
    x = beta * ((pc - pr) - (rc - rr))
    z = x / tau
    q0 = _std(z) * torch.sigmoid(-z).mean()
    q = q0 + 0.05 * (torch.sigmoid(z.mean()) - q0)
    b = torch.sigmoid(0.1 * torch.abs(z - q))
    return b * _nll(x) + (1 - b) * _hinge(x)


def ref_dbaql(pc, pr, rc, rr, beta, tau=TAU):
    x = beta * ((pc - pr) - (rc - rr))
    c = torch.sigmoid(_var(x / tau))
    return c * _nll(x / 0.9) + (1 - c) * torch.exp(-0.9 * x)


REFERENCES = {
    "discopop": ref_discopop,
    "padll": ref_padll,
    "cell": ref_cell,
    "pfl": ref_pfl,
    "aql": ref_aql,
    "aqfl": ref_aqfl,
    "dbaql": ref_dbaql,
}


def random_batch(n, beta, seed, dtype=torch.float64):
    """Four logp tensors whose x = beta * d spans about -8..8, with pc > pr and pc < pr both present."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, generator=g, dtype=torch.float64) * 16 - 8) if n > 1 else torch.tensor([2.5])
    d = x / beta
    rr = -torch.rand(n, generator=g, dtype=torch.float64) * 200 - 20
    rc = rr + (torch.rand(n, generator=g, dtype=torch.float64) * 100 - 50)
    pr = -torch.rand(n, generator=g, dtype=torch.float64) * 200 - 20
    pc = pr + d + (rc - rr)
    return [t.to(dtype).requires_grad_(True) for t in (pc, pr, rc, rr)]


def value_and_grads(fn, inputs, weights):
    loss = fn(*inputs)
    grads = torch.autograd.grad((loss * weights).sum(), inputs)
    return loss.detach(), grads


# --- values and gradients -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAPER_LOSSES)
@pytest.mark.parametrize("n", [1, 2, 5, 64])
@pytest.mark.parametrize("beta", [0.05, 0.2])
def test_value_and_gradient_match_formula(name, n, beta):
    tau = 0.05 if beta == 0.05 else 0.1
    inputs = random_batch(n, beta, seed=n * 7 + int(beta * 100))
    weights = torch.rand(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64) + 0.5
    fn = losses.get_loss(name)
    params = {"discopop_tau": tau} if "discopop_tau" in losses.get_spec(name).params else {}
    got, got_grads = value_and_grads(lambda *t: fn(*t, beta=beta, **params), inputs, weights)
    want, want_grads = value_and_grads(lambda *t: REFERENCES[name](*t, beta, tau), inputs, weights)
    assert got.dtype == torch.float64 and got.shape == (n,)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


def test_batch_covers_both_signs_and_the_x_range():
    pc, pr, rc, rr = random_batch(64, 0.05, seed=1)
    x = 0.05 * ((pc - pr) - (rc - rr))
    assert x.min() < -6 and x.max() > 6
    assert (pc > pr).any() and (pc < pr).any()
    assert ((x > 0) & (pc < pr)).any() or ((x < 0) & (pc > pr)).any()


def test_lrml_alias_is_discopop():
    inputs = random_batch(16, 0.05, seed=3)
    assert losses.get_loss("lrml") is losses.get_loss("discopop")
    torch.testing.assert_close(
        losses.get_loss("lrml")(*inputs, beta=0.05), losses.get_loss("discopop")(*inputs, beta=0.05)
    )
    assert losses.get_spec("lrml").name == "discopop"


def test_discopop_matches_seed_model_card_form():
    # The model card mixes with sigmoid(logits) (no beta): equal to sig(x / tau) when beta == tau.
    pc, pr, rc, rr = random_batch(32, 0.05, seed=5)
    logits = (pc - pr) - (rc - rr)
    m = torch.sigmoid(logits)
    card = -F.logsigmoid(0.05 * logits) * (1 - m) + torch.exp(-0.05 * logits) * m
    torch.testing.assert_close(losses.discopop(pc, pr, rc, rr, beta=0.05), card, rtol=1e-9, atol=1e-12)


# --- numerics -----------------------------------------------------------------------------------------


def test_discopop_finite_in_float32_over_huge_margins():
    x = torch.cat([torch.linspace(-1e4, 1e4, 4001), torch.tensor([-88.7, -89.0, -100.0, 0.0, 88.0])])
    pc = x.clone().requires_grad_(True)
    zero = torch.zeros_like(x)
    loss = losses.discopop(pc, zero, zero, zero, beta=1.0)
    (grad,) = torch.autograd.grad(loss.sum(), pc)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    # the literal form is nan there; the stable one agrees with it where the literal one is finite
    literal = ref_discopop(x.double(), zero.double(), zero.double(), zero.double(), 1.0)
    ok = torch.isfinite(literal)
    assert not ok.all()
    torch.testing.assert_close(loss.detach().double()[ok], literal[ok], rtol=1e-5, atol=1e-6)
    assert loss[0].item() == pytest.approx(1e4, rel=1e-6)  # -log sig(x) ~ -x for very negative x


@pytest.mark.parametrize(("dtype", "limit"), [(torch.bfloat16, 1e4), (torch.float16, 6e4)])
def test_discopop_finite_for_half_inputs(dtype, limit):
    pc = torch.linspace(-limit, limit, 1001).to(dtype).requires_grad_(True)
    zero = torch.zeros(1001, dtype=dtype)
    loss = losses.discopop(pc, zero, zero, zero, beta=0.05)
    (grad,) = torch.autograd.grad(loss.sum(), pc)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


EXTREME_X = [-1e4, -3e3, -1e3, -200.0, -89.0, -60.0, -50.0, -45.0, -11.5, -1.0, 0.0, 1.0, 11.5, 89.0, 1e3, 1e4]


def extreme_inputs(x_values, beta, dtype):
    """pc, pr, rc, rr in `dtype` with beta * d = x; each a quarter of d, so float16 holds d up to 2.6e5."""
    d = torch.tensor(x_values, dtype=torch.float64) / beta
    quarter = d / 4
    parts = (quarter, -quarter, -quarter, quarter)  # (pc - pr) - (rc - rr) = d
    return [t.to(dtype).requires_grad_(True) for t in parts]


@pytest.mark.parametrize("name", PAPER_LOSSES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("beta", [0.05, 1.0])
def test_every_loss_finite_over_dtypes_and_extreme_margins(name, dtype, beta):
    fn = losses.get_loss(name)
    batches = [EXTREME_X] + [[x] for x in EXTREME_X]  # the whole sweep as one batch, and one pair at a time
    for x_values in batches:
        inputs = extreme_inputs(x_values, beta, dtype)
        loss = fn(*inputs, beta=beta)
        grads = torch.autograd.grad(loss.sum(), inputs)
        assert loss.dtype == torch.float32, (name, dtype)
        assert torch.isfinite(loss).all(), (name, dtype, beta, x_values, loss)
        for g in grads:
            assert g.dtype == dtype and torch.isfinite(g).all(), (name, dtype, beta, x_values, g)


@pytest.mark.parametrize(("name", "scale"), [("cell", 1.0), ("dbaql", 0.9)])
def test_exponential_tails_are_exact_then_tangent(name, scale):
    """exp(-scale * x) exactly while the exponent is <= 50, then its tangent line: finite, increasing, slope e^50."""
    x = torch.tensor([-40.0, -50.0 / scale, -60.0, -1e3, -1e4], dtype=torch.float64).requires_grad_(True)
    zero = torch.zeros(1, dtype=torch.float64)
    per_pair = [losses.get_loss(name)(xi.reshape(1), zero, zero, zero, beta=1.0) for xi in x]
    exponent = -scale * x.detach()
    weight = 0.5  # cell: 0.5 * exp; dbaql with one pair: (1 - c) = 0.5
    nll = -F.logsigmoid(x.detach() / (0.9 if name == "dbaql" else 1.0))
    exact = weight * torch.exp(exponent) + weight * nll
    tangent = weight * math.exp(50) * (1 + exponent - 50) + weight * nll
    values = torch.cat(per_pair).detach()
    torch.testing.assert_close(values[:2], exact[:2], rtol=1e-12, atol=0)
    torch.testing.assert_close(values[2:], tangent[2:], rtol=1e-12, atol=0)
    assert (values[1:] > values[:-1]).all()  # still increasing as x falls
    slopes = [torch.autograd.grad(v.sum(), x, retain_graph=True)[0][i].item() for i, v in enumerate(per_pair)]
    assert slopes[3] == pytest.approx(-weight * scale * math.exp(50) - weight / (0.9 if name == "dbaql" else 1))
    assert all(s < 0 for s in slopes)


def test_single_pair_aqfl_has_no_spread():
    pc, pr, rc, rr = (t.detach() for t in random_batch(1, 0.05, seed=4))
    x = 0.05 * ((pc - pr) - (rc - rr))
    z = x / TAU
    q = 0.05 * torch.sigmoid(z)  # q0 = std * mean(sig(-z)) = 0 with std := 0
    b = torch.sigmoid(0.1 * (z - q).abs())
    want = b * -F.logsigmoid(x) + (1 - b) * torch.relu(1 - x)
    torch.testing.assert_close(losses.aqfl(pc, pr, rc, rr, beta=0.05), want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", PAPER_LOSSES)
def test_half_inputs_computed_in_float32(name):
    pc, pr, rc, rr = (t.detach().to(torch.bfloat16) for t in random_batch(8, 0.05, seed=9))
    assert losses.get_loss(name)(pc, pr, rc, rr, beta=0.05).dtype == torch.float32


@pytest.mark.parametrize("name", ["aql", "aqfl", "dbaql"])
def test_batch_statistic_losses_finite_with_one_pair_or_no_spread(name):
    fn = losses.get_loss(name)
    for n in (1, 4):  # n = 4 with identical pairs: std = 0, as at step 0 when policy == reference
        pc = torch.full((n,), -10.0, requires_grad=True)
        rest = [torch.full((n,), -10.0) for _ in range(3)]
        loss = fn(pc, *rest, beta=0.05)
        (grad,) = torch.autograd.grad(loss.sum(), pc)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


def test_single_pair_uses_zero_spread():
    pc, pr, rc, rr = (t.detach() for t in random_batch(1, 0.05, seed=2))
    x = 0.05 * ((pc - pr) - (rc - rr))
    c = 0.5  # sig(var) with var := 0
    want = c * -F.logsigmoid(x / 0.9) + (1 - c) * torch.exp(-0.9 * x)
    torch.testing.assert_close(losses.dbaql(pc, pr, rc, rr, beta=0.05), want, rtol=1e-12, atol=0)


# --- registry -----------------------------------------------------------------------------------------


def test_specs_describe_each_loss():
    specs = {spec.name: spec for spec in losses.list_losses()}
    assert set(PAPER_LOSSES) <= set(specs)
    assert specs["discopop"].aliases == ("lrml",)
    assert specs["discopop"].long_name == "Log-Ratio Modulated Loss"
    assert specs["discopop"].formula.startswith("m = sig(x / tau); L = (1 - m)")
    assert "\n" not in specs["aqfl"].formula and "std(z)" in specs["aqfl"].formula
    for name in ("discopop", "aql", "aqfl", "dbaql"):
        assert specs[name].params == {"discopop_tau": 0.05}
    for name in ("padll", "cell", "pfl"):
        assert specs[name].params == {}
    assert all(spec.source == "discopop-cli" for name, spec in specs.items() if name in PAPER_LOSSES)


def test_trl_loss_types():
    assert "discopop" not in losses.TRL_LOSS_TYPES
    assert losses.is_trl_loss("sigmoid") and losses.is_trl_loss("apo_zero")
    assert not losses.is_trl_loss("discopop") and not losses.is_trl_loss("aqfl")
    with pytest.raises(UserError, match="TRL built-in"):
        losses.get_loss("sigmoid")


def test_trl_loss_types_match_installed_trl():
    # read TRL's source without importing it (importing trl takes seconds)
    import importlib.util
    from pathlib import Path

    trl_dir = Path(importlib.util.find_spec("trl").submodule_search_locations[0])
    source = (trl_dir / "trainer" / "dpo_trainer.py").read_text()
    body = source[source.index("def _compute_loss(") :]
    for name in (*losses.TRL_LOSS_TYPES, "discopop"):
        assert f'loss_type == "{name}"' in body, name


@pytest.mark.parametrize(("typo", "suggestion"), [("discopo", "discopop"), ("aqffl", "aqfl"), ("lrm", "lrml")])
def test_unknown_name_suggests_closest(typo, suggestion):
    with pytest.raises(UserError) as info:
        losses.get_loss(typo)
    message = str(info.value)
    assert f"`{typo}`" in message and f"did you mean `{suggestion}`" in message
    assert "run `discopop losses` to list them" in message.lower() and "\n" not in message


@pytest.fixture
def scratch_loss():
    created: list[str] = []
    yield created
    for name in created:
        losses.unregister_loss(name)


def test_register_loss_is_seen_by_lookup_and_listing(scratch_loss):
    name = f"scratch_{uuid.uuid4().hex[:8]}"

    @losses.register_loss(name, long_name="Scratch Loss", aliases=(name + "_alias",))
    def scratch(pc, pr, rc, rr, *, beta, margin: float = 0.5):
        """L = relu(margin - x)"""
        return torch.relu(margin - beta * ((pc - pr) - (rc - rr)))

    scratch_loss.append(name)
    assert losses.get_loss(name) is scratch and losses.get_loss(name + "_alias") is scratch
    spec = losses.get_spec(name)
    assert (spec.long_name, spec.formula, spec.params) == ("Scratch Loss", "L = relu(margin - x)", {"margin": 0.5})
    assert name in [s.name for s in losses.list_losses()]
    with pytest.raises(ValueError, match="already registered"):
        losses.register_loss(name)(scratch)
    with pytest.raises(ValueError, match="already registered"):
        losses.register_loss("lrml")(scratch)


# --- user losses from module:function -----------------------------------------------------------------


USER_MODULE = '''
import torch
import torch.nn.functional as F


def standard(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
             *, beta, scale=2.0):
    """L = scale * (-log sig(x))"""
    d = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return -scale * F.logsigmoid(beta * d)


def paper_form(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
               reference_rejected_logps):
    pi_logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = reference_chosen_logps - reference_rejected_logps
    return torch.exp(-self.beta * (pi_logratios - ref_logratios)) + getattr(self, "offset", 0.0)


NOT_CALLABLE = 3


def wrong(a, b):
    return a
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = f"user_losses_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_user_loss_standard_signature(user_module):
    pc, pr, rc, rr = (torch.tensor(v, dtype=torch.float64) for v in ([-1.0, -5.0], [-3.0, -2.0], [0.0] * 2, [0.0] * 2))
    fn = losses.get_loss(f"{user_module}:standard")
    got = fn(pc, pr, rc, rr, beta=0.5)
    want = torch.tensor([2 * math.log1p(math.exp(-1.0)), 2 * math.log1p(math.exp(1.5))], dtype=torch.float64)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(fn(pc, pr, rc, rr, beta=0.5, scale=1.0), want / 2)
    spec = losses.get_spec(f"{user_module}:standard")
    assert spec.params == {"scale": 2.0} and spec.formula == "L = scale * (-log sig(x))"
    assert spec.source == f"{user_module}:standard"


def test_user_loss_paper_signature_reads_self_beta(user_module):
    pc, pr, rc, rr = (torch.tensor(v) for v in ([-1.0, -5.0], [-3.0, -2.0], [-1.0, -1.0], [-1.0, -2.0]))
    fn = losses.get_loss(f"{user_module}:paper_form")
    got = fn(pc, pr, rc, rr, beta=0.1)
    torch.testing.assert_close(got, torch.exp(torch.tensor([-0.2, 0.4])))
    torch.testing.assert_close(fn(pc, pr, rc, rr, beta=0.1, offset=1.0), torch.exp(torch.tensor([-0.2, 0.4])) + 1)
    assert losses.get_spec(f"{user_module}:paper_form").params == {}


def test_user_loss_errors(user_module):
    with pytest.raises(UserError, match="cannot import module `no_such_module_xyz`"):
        losses.get_loss("no_such_module_xyz:fn")
    with pytest.raises(UserError, match="has no attribute `missing`"):
        losses.get_loss(f"{user_module}:missing")
    with pytest.raises(UserError, match="not a function"):
        losses.get_loss(f"{user_module}:NOT_CALLABLE")
    with pytest.raises(UserError, match="wrong signature"):
        losses.get_loss(f"{user_module}:wrong")
    with pytest.raises(UserError, match="package.module:function"):
        losses.get_loss(":fn")


PLUGIN_MODULE = """
import torch

from discopop_cli.losses import register_loss


@register_loss("{prefix}_decorated", long_name="Decorated Plugin Loss")
def decorated(pc, pr, rc, rr, *, beta):
    \"\"\"L = -x\"\"\"
    return -beta * ((pc - pr) - (rc - rr))


def plain(pc, pr, rc, rr, *, beta, k: float = 3.0):
    \"\"\"L = k\"\"\"
    return torch.full_like(pc, k)
"""


def test_entry_point_plugins_load_lazily(tmp_path, monkeypatch):
    import importlib.metadata as metadata

    prefix = f"plug_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{prefix}.py").write_text(PLUGIN_MODULE.format(prefix=prefix))
    monkeypatch.syspath_prepend(str(tmp_path))
    group = losses.PLUGIN_GROUP
    eps = [
        metadata.EntryPoint(f"{prefix}_decorated", f"{prefix}:decorated", group),
        metadata.EntryPoint(f"{prefix}_plain", f"{prefix}:plain", group),
        metadata.EntryPoint(f"{prefix}_broken", f"{prefix}_missing_module:fn", group),
    ]
    monkeypatch.setattr(metadata, "entry_points", lambda group: eps if group == losses.PLUGIN_GROUP else [])
    monkeypatch.setattr(losses.registry, "_plugins_loaded", False)
    try:
        names = [spec.name for spec in losses.list_losses()]
        assert names[: len(PAPER_LOSSES)] == list(PAPER_LOSSES)
        assert f"{prefix}_decorated" in names and f"{prefix}_plain" in names
        assert f"{prefix}_broken" not in names  # skipped with a warning, the rest still load
        plain = losses.get_spec(f"{prefix}_plain")
        assert plain.params == {"k": 3.0} and plain.formula == "L = k"
        one = torch.ones(2)
        torch.testing.assert_close(losses.get_loss(f"{prefix}_plain")(one, one, one, one, beta=0.1), 3 * one)
        assert losses.get_spec(f"{prefix}_decorated").long_name == "Decorated Plugin Loss"
    finally:
        for name in (f"{prefix}_decorated", f"{prefix}_plain"):
            if name in {spec.name for spec in losses.list_losses()}:
                losses.unregister_loss(name)
        sys.modules.pop(prefix, None)
