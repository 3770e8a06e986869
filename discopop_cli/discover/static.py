"""The AST allow-list every candidate passes before any of its code runs anywhere.

A candidate is one module holding exactly one function (plus imports of torch/math, constants and a docstring).
Everything it may touch is listed here: node types, builtins, torch/math functions by qualified name, tensor
methods by name. What is not listed is refused: imports of anything else, names or attributes starting with
`_` (so no dunder escapes), loops, nested functions and lambdas, comprehensions, `open`, `exec`, `eval`,
`getattr` and their kin (not on the builtin list), calls on computed callables, and star-arguments.

The list is small on purpose: a refused loss costs one archive line, an escaped one could cost the machine.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from discopop_cli.discover.candidate import MAX_SOURCE_CHARS, the_function


class Rejected(Exception):
    """A candidate refused, with the reason recorded in the archive; `stage` says which check refused it."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


_FUNCTIONS = (
    *("exp", "exp2", "expm1", "log", "log1p", "log2", "log10", "sigmoid", "tanh", "sinh", "cosh", "sin", "cos"),
    *("atan", "atan2", "relu", "abs", "sqrt", "rsqrt", "square", "pow", "clamp", "clip", "clamp_min", "clamp_max"),
    *("where", "minimum", "maximum", "min", "max", "mean", "std", "var", "sum", "softmax", "log_softmax"),
    *("logsumexp", "logaddexp", "sign", "neg", "reciprocal", "erf", "erfc", "floor", "ceil", "round", "trunc"),
    *("lerp", "hypot", "nan_to_num", "median", "mul", "add", "sub", "div", "true_divide", "gt", "lt", "ge", "le"),
    *("eq", "ne", "logical_and", "logical_or", "logical_not", "heaviside", "signbit", "isfinite"),
)
_TORCH_ONLY = (
    *("zeros_like", "ones_like", "full_like", "tensor", "as_tensor", "stack", "cat", "detach", "Tensor"),
    *("float32", "float64", "float16", "bfloat16", "e", "pi", "inf"),
)
_F = (
    *("logsigmoid", "softplus", "relu", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "sigmoid"),
    *("tanh", "hardtanh", "hardsigmoid", "softsign", "tanhshrink", "relu6", "softmax", "log_softmax"),
    *("smooth_l1_loss", "huber_loss", "mse_loss", "binary_cross_entropy_with_logits"),
)
_MATH = (
    *("pi", "e", "inf", "tau", "log", "log1p", "exp", "expm1", "sqrt", "tanh", "fabs", "pow", "floor", "ceil"),
    *("sin", "cos", "atan", "isfinite"),
)
ALLOWED_QUALIFIED = frozenset(
    [f"torch.{n}" for n in (*_FUNCTIONS, *_TORCH_ONLY)]
    + [f"torch.nn.functional.{n}" for n in _F]
    + [f"math.{n}" for n in _MATH]
)
ALLOWED_MODULES = frozenset({"torch", "torch.nn", "torch.nn.functional", "math"})
TENSOR_ATTRS = frozenset(
    {*_FUNCTIONS, "detach", "float", "double", "to", "type_as", "unsqueeze", "squeeze", "reshape", "view", "flatten"}
    | {"shape", "size", "dtype", "device", "ndim", "numel", "masked_fill", "clone", "contiguous", "values", "indices"}
)
BUILTINS = frozenset({"abs", "min", "max", "float", "bool", "round", "sum", "True", "False", "None"})
_NODES = (
    *(ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Return, ast.Assign, ast.AugAssign, ast.AnnAssign),
    *(ast.Expr, ast.If, ast.IfExp, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Call, ast.keyword),
    *(ast.Name, ast.Attribute, ast.Subscript, ast.Slice, ast.Tuple, ast.List, ast.Constant, ast.Pass),
    *(ast.Import, ast.ImportFrom, ast.alias, ast.Load, ast.Store),
    *(ast.operator, ast.unaryop, ast.cmpop, ast.boolop),
)
LARGEST_INT = 10**6
PAPER_FORM_FIRST = "self"


@dataclass(frozen=True)
class Checked:
    """What the static check learnt: the function's name and whether it takes the paper's `self` form."""

    function: str
    paper_form: bool


def check_source(code: str) -> Checked:
    """Raise Rejected('static', reason) unless `code` stays inside the allow-list."""
    if len(code) > MAX_SOURCE_CHARS:
        raise Rejected("static", f"the source is {len(code)} characters; at most {MAX_SOURCE_CHARS} are accepted")
    if "\x00" in code:
        raise Rejected("static", "the source contains a NUL byte")
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise Rejected("static", f"does not parse: {getattr(exc, 'msg', exc)}{where}") from None
    function = _module_shape(tree)
    paper_form = _check_signature(function)
    _Walker(_scope(tree, function)).visit(tree)
    return Checked(function.name, paper_form)


def _module_shape(tree: ast.Module) -> ast.FunctionDef:
    function = the_function(tree)
    if function is None:
        count = sum(isinstance(n, ast.FunctionDef) for n in tree.body)
        raise Rejected("static", f"the module must define exactly one function, found {count}")
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # a docstring or a stray string
        if (
            isinstance(node, ast.Assign)
            and all(isinstance(t, ast.Name) for t in node.targets)
            and _is_constant(node.value)
        ):
            continue
        raise Rejected(
            "static", f"line {node.lineno}: only imports, constants and the function may sit at module level"
        )
    if function.decorator_list:
        raise Rejected("static", "decorators are not allowed")
    return function


def _is_constant(node: ast.expr) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        node = node.operand
    return isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool)


def _check_signature(function: ast.FunctionDef) -> bool:
    args = function.args
    if args.vararg or args.kwarg or args.posonlyargs:
        raise Rejected("static", "the function may not take *args, **kwargs or positional-only parameters")
    positional = [a.arg for a in args.args]
    if positional[:1] == [PAPER_FORM_FIRST]:
        if len(positional) != 5 or args.kwonlyargs:
            raise Rejected("static", "the paper's form is f(self, pc, pr, rc, rr) reading self.beta")
        return True
    names = positional + [a.arg for a in args.kwonlyargs]
    if len(positional) not in (4, 5) or "beta" not in names[4:]:
        raise Rejected(
            "static",
            "the signature must be (policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, "
            "reference_rejected_logps, *, beta)",
        )
    defaults = args.defaults + [d for d in args.kw_defaults if d is not None]
    if any(not _is_constant(d) for d in defaults):
        raise Rejected("static", "parameter defaults must be numbers")
    return False


def _scope(tree: ast.Module, function: ast.FunctionDef) -> dict[str, str]:
    """Names in scope -> what they are: a qualified torch/math name, or '' for a local value."""
    scope: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                _allowed_module(alias.name, node.lineno)
                if alias.asname:
                    scope[alias.asname] = alias.name
                else:
                    scope[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level or not node.module:
                raise Rejected("static", f"line {node.lineno}: relative imports are not allowed")
            _allowed_module(node.module, node.lineno)
            for alias in node.names:
                qualified = f"{node.module}.{alias.name}"
                if qualified not in ALLOWED_MODULES and qualified not in ALLOWED_QUALIFIED:
                    raise Rejected("static", f"line {node.lineno}: `{qualified}` is not on the allow-list")
                scope[alias.asname or alias.name] = qualified
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            scope.setdefault(node.id, "")
    for a in [*function.args.args, *function.args.kwonlyargs]:
        scope[a.arg] = ""
    return scope


def _allowed_module(name: str, line: int) -> None:
    if name not in ALLOWED_MODULES:
        raise Rejected("static", f"line {line}: import of `{name}` is not allowed (only torch and math)")


class _Walker(ast.NodeVisitor):
    def __init__(self, scope: dict[str, str]) -> None:
        self.scope = scope

    def generic_visit(self, node: ast.AST) -> None:
        if not isinstance(node, _NODES):
            where = f"line {node.lineno}: " if hasattr(node, "lineno") else ""
            raise Rejected("static", f"{where}{type(node).__name__} is not allowed in a loss")
        if isinstance(node, ast.FunctionDef) and any(
            isinstance(n, ast.FunctionDef) for n in ast.walk(node) if n is not node
        ):
            raise Rejected("static", f"line {node.lineno}: nested functions are not allowed")
        super().generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        _no_underscore(node.id, node.lineno)
        if isinstance(node.ctx, ast.Load) and node.id not in self.scope and node.id not in BUILTINS:
            raise Rejected("static", f"line {node.lineno}: `{node.id}` is not defined or not allowed")

    def visit_arg(self, node: ast.arg) -> None:
        _no_underscore(node.arg, node.lineno)
        if node.annotation is not None:
            self.visit(node.annotation)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        _no_underscore(node.attr, node.lineno)
        qualified = self._qualified(node)
        if qualified is not None:
            if qualified not in ALLOWED_QUALIFIED and qualified not in ALLOWED_MODULES:
                raise Rejected("static", f"line {node.lineno}: `{qualified}` is not on the allow-list")
            return
        if isinstance(node.value, ast.Name) and node.value.id == PAPER_FORM_FIRST:
            if node.attr != "beta":
                raise Rejected("static", f"line {node.lineno}: only self.beta may be read from self")
            return
        self.visit(node.value)  # inside out: `open(p).read()` is refused for `open`, the real problem
        if node.attr not in TENSOR_ATTRS:
            raise Rejected("static", f"line {node.lineno}: the attribute `.{node.attr}` is not on the allow-list")

    def _qualified(self, node: ast.expr) -> str | None:
        """`F.logsigmoid` -> 'torch.nn.functional.logsigmoid' when the chain starts at an imported module."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or not self.scope.get(node.id):
            return None
        return ".".join([self.scope[node.id], *reversed(parts)])

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)  # inside out, as for attributes
        func = node.func
        if isinstance(func, ast.Name):
            if func.id not in BUILTINS and not self.scope.get(func.id):
                raise Rejected("static", f"line {node.lineno}: calling `{func.id}` is not allowed")
        elif not isinstance(func, ast.Attribute):
            raise Rejected("static", f"line {node.lineno}: only named functions and methods may be called")
        if any(k.arg is None for k in node.keywords):
            raise Rejected("static", f"line {node.lineno}: **-arguments are not allowed")

    def visit_BinOp(self, node: ast.BinOp) -> None:
        # Repeating a list or string by a number is how a two-line memory bomb is written; a loss has no use for it.
        for side in (node.left, node.right):
            if isinstance(side, ast.List | ast.Tuple) or (
                isinstance(side, ast.Constant) and isinstance(side.value, str | bytes)
            ):
                raise Rejected("static", f"line {node.lineno}: arithmetic on lists or strings is not allowed")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bytes):
            raise Rejected("static", f"line {node.lineno}: bytes literals are not allowed")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > LARGEST_INT:
            raise Rejected("static", f"line {node.lineno}: the integer {value} is larger than {LARGEST_INT}")


def _no_underscore(name: str, line: int) -> None:
    if name.startswith("_"):
        raise Rejected("static", f"line {line}: names starting with `_` (like `{name[:20]}`) are not allowed")
